"""Physically remove pruned channels: a new, smaller model with plain layers.

``shrink(masked_model)`` rebuilds the network with fewer filters in every
pruned conv/dense layer, the matching input channels removed from every
consumer (also across residual adds, concatenations and flattens), BatchNorm,
PReLU and depthwise parameters sliced, and no masks left, so LCE converts it like
any hand-written model. Its outputs equal the masked model's outputs.

Example::

    from bnnprune_tf import prune, shrink
    masked = prune.prune_filters(model, "l1", ratio=0.5, round_to="lce")
    small = shrink.shrink(masked)
    small.summary()
"""

from __future__ import annotations

import tensorflow as tf

from bnnprune_tf import masks
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.layer_facts import DEPTHWISE, PER_CHANNEL, PRODUCERS
from bnnprune_tf.models import copy_model


def _check_no_partial_weight_masks(layer, in_keep, out_keep) -> None:
    wm = layer.weight_mask.numpy()
    if masks.MaskedLayer._is_depthwise(layer):
        kept = wm[..., in_keep, :]
    else:
        kept = wm[..., in_keep, :][..., out_keep]
    if not kept.all():
        raise ModelError(
            f"layer {layer.name!r} has unstructured (weight) masks inside kept filters: "
            f"{int(kept.size - kept.sum())} weights are zero. A Larq/LCE model cannot hold "
            "zero binary weights; prune whole filters (structured mode) or deploy the "
            "masked model with the bnnprune microcontroller runtime "
            "(converters.c_export.write, firmware/), which stores ternary weights")


def shrink(model: tf.keras.Model) -> tf.keras.Model:
    """A new model without the channels that no consumer of ``model`` reads.

    ``model`` may be masked (from :func:`bnnprune_tf.masks.prunable`) or plain
    (then the copy is identical, even for layers the channel graph cannot read). Layer names are kept; masked layer classes
    become their plain Keras/Larq classes.

    Raises:
        ModelError: unstructured masks inside kept filters, inconsistent masks,
            or a layer the channel graph does not understand.
    """
    if not masks.has_masks(model):
        return copy_model(model)
    graph = ChannelGraph(model)
    keep = graph.keep_from_masks(model)
    in_keep = {n: graph.keep_indices(l, keep) for n, l in graph.inputs.items()}
    out_keep = {n: graph.keep_indices(l, keep) for n, l in graph.outputs.items()}

    def clone(layer):
        cls = masks.UNMASKED.get(type(layer), type(layer))
        config = layer.get_config()
        if isinstance(layer, PRODUCERS):
            config["filters" if "filters" in config else "units"] = len(out_keep[layer.name])
        if isinstance(layer, tf.keras.layers.Reshape) and config["target_shape"][-1] != -1:
            config["target_shape"] = (*config["target_shape"][:-1], len(out_keep[layer.name]))
        return cls.from_config(config)

    small = tf.keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, small.layers):
        if not old.weights:
            continue
        name = old.name
        values = old.get_weights()
        if isinstance(old, PRODUCERS):
            if masks.is_masked(old):
                _check_no_partial_weight_masks(old, in_keep[name], out_keep[name])
            kernel = values[0][..., in_keep[name], :][..., out_keep[name]]
            new_values = [kernel] + ([values[1][out_keep[name]]] if old.use_bias else [])
        elif isinstance(old, DEPTHWISE):
            if masks.is_masked(old):
                _check_no_partial_weight_masks(old, in_keep[name], None)
            new_values = [values[0][..., in_keep[name], :]] + \
                ([values[1][in_keep[name]]] if old.use_bias else [])
        elif isinstance(old, PER_CHANNEL):
            new_values = [v[..., in_keep[name]] for v in values]     # channels last
        else:
            raise ModelError(f"layer {name!r} ({type(old).__name__}) has weights but is not a "
                             "layer type shrink knows how to slice")
        new.set_weights(new_values)
    return small
