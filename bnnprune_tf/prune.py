"""User verbs for structured (filter) pruning, in the spirit of tfmot.

- :func:`prune_filters` masks the lowest-scoring filters of every channel group
  (one call, no training);
- :class:`PruneFilters` does it during ``model.fit`` on a tfmot pruning
  schedule (``tfmot.sparsity.keras.PolynomialDecay``, ``ConstantSparsity``);
- :func:`strip_pruning` removes the pruning state: it is :func:`shrink`, as a
  BNN cannot keep pruned channels as zeros (``sign(0) = +1``, and LCE runs a
  zero binary weight as a float convolution).

Methods only compute scores (a criterion: layer -> score per filter); the
graph, the selector and shrink do the rest.

Example::

    import tensorflow_model_optimization as tfmot
    from bnnprune_tf import masks, prune

    # one call
    masked = prune.prune_filters(model, "l1", ratio=0.5, round_to="lce")
    small = prune.strip_pruning(masked)

    # during training
    masked = masks.prunable(model)
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=500,
                                                    frequency=100)
    masked.fit(train, epochs=5, callbacks=[prune.PruneFilters(schedule, "l1")])
    small = prune.strip_pruning(masked)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from bnnprune_tf import masks, select
from bnnprune_tf.layer_facts import PRODUCERS
from bnnprune_tf.models import copy_model
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.shrink import shrink


def prune_filters(model: tf.keras.Model, criterion: str | select.Criterion = "l1", *,
                  ratio: float | None = None, ratios: Mapping[str, float] | None = None,
                  widths: Mapping[str, int] | None = None,
                  round_to: int | str | Mapping[str, int] | None = None, seed: int = 0,
                  graph: ChannelGraph | None = None) -> tf.keras.Model:
    """Mask the lowest-scoring filters of each channel group; returns the masked model.

    ``model`` is made prunable first if it is not (a copy); an already masked
    model is updated in place, and filters pruned before stay pruned. Targets
    and ``round_to`` are those of :func:`bnnprune_tf.select.select`.

    Args:
        criterion: ``"l1"``, ``"random"`` or a function ``layer -> score per filter``.
        graph: the model's :class:`ChannelGraph`, to skip rebuilding it.
    """
    masked = masks.prunable(model)
    graph = graph or ChannelGraph(masked)
    scores = select.group_scores(graph, masked, select.get_criterion(criterion, seed))
    chosen = select.select(graph, scores, ratio=ratio, ratios=ratios, widths=widths,
                           round_to=round_to)
    graph.apply_masks(masked, {**graph.keep_from_masks(masked), **chosen})
    return masked


def kept_widths(model: tf.keras.Model) -> dict[str, int]:
    """Filters each conv/dense layer keeps: masked filters do not count.

    Example::

        kept_widths(prune_filters(model, "l1", ratio=0.5))   # {"conv2": 32, ...}
    """
    producers = [l for l in model.layers if isinstance(l, PRODUCERS)]
    if not masks.has_masks(model):
        return {l.name: int(l.output.shape[-1]) for l in producers}
    graph = ChannelGraph(model)
    keep = graph.keep_from_masks(model)
    return {l.name: int(graph.layout_mask(graph.outputs[l.name], keep).sum()) for l in producers}


def strip_pruning(model: tf.keras.Model, keep_weight_masks: bool = False) -> tf.keras.Model:
    """The tfmot verb: ``model`` without pruning state, ready to deploy.

    tfmot ``prune_low_magnitude`` wrappers are stripped, and pruned channels are
    physically removed (:func:`bnnprune_tf.shrink.shrink`): a BNN cannot keep
    them as zeros (``sign(0) = +1``; LCE runs a zero binary weight as a float
    convolution). A model without pruning state is returned as is.

    Weight masks inside kept filters (unstructured pruning) are an error unless
    ``keep_weight_masks``: then they stay, on a masked copy of the shrunk model,
    and deploy as ternary weights (:mod:`converters.c_export`).

    Example::

        small = strip_pruning(prune_filters(model, "l1", ratio=0.5))
        ternary = strip_pruning(weight_pruned, keep_weight_masks=True)
    """
    if any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers):
        import tensorflow_model_optimization as tfmot

        model = tfmot.sparsity.keras.strip_pruning(model)
    masked = [layer for layer in model.layers if masks.is_masked(layer)]
    if not any((layer.channel_mask.numpy() == 0).any()
               or (layer.input_channel_mask.numpy() == 0).any() for layer in masked):
        return model if not masked or keep_weight_masks else shrink(model)
    weight_masks = {layer.name: layer.weight_mask.numpy() for layer in masked}
    if not keep_weight_masks or all(m.all() for m in weight_masks.values()):
        return shrink(model)
    graph = ChannelGraph(model)
    keep = graph.keep_from_masks(model)
    copy = copy_model(model)
    for layer in copy.layers:
        if masks.is_masked(layer):
            layer.set_masks(weights=np.ones_like(weight_masks[layer.name]))
    small = masks.prunable(shrink(copy))
    for name, mask in weight_masks.items():
        if mask.all():
            continue
        if name not in graph.inputs or name not in graph.outputs or mask.ndim != 4:
            raise ModelError(f"layer {name!r}: weight masks are supported on convolutions "
                             "only; remove them or prune whole filters")
        kept_in = graph.keep_indices(graph.inputs[name], keep)
        kept_out = graph.keep_indices(graph.outputs[name], keep)
        small.get_layer(name).set_masks(weights=mask[..., kept_in, :][..., kept_out])
    return small


class PruneFilters(tf.keras.callbacks.Callback):
    """Prune filters during ``fit`` following a tfmot ``PruningSchedule``.

    Before each training step where ``schedule(step)`` says to prune, every
    channel group is pruned to the schedule's sparsity (a share of channels)
    by ``criterion``. The model given to ``fit`` must be masked
    (:func:`bnnprune_tf.masks.prunable`). ``self.events`` lists
    ``(step, sparsity)`` of each pruning.
    """

    def __init__(self, schedule, criterion: str | select.Criterion = "l1",
                 round_to: int | str | Mapping[str, int] | None = None, seed: int = 0):
        super().__init__()
        self.schedule = schedule
        self.criterion = select.get_criterion(criterion, seed)
        self.round_to = round_to
        self.events: list[tuple[int, float]] = []
        self._graph = None

    def on_train_begin(self, logs=None):
        masks.require_masks(self.model, "PruneFilters")
        self._graph = ChannelGraph(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        should_prune, sparsity = self.schedule(step)
        if bool(should_prune):
            sparsity = float(sparsity)
            prune_filters(self.model, self.criterion, ratio=sparsity, round_to=self.round_to,
                          graph=self._graph)
            self.events.append((step, sparsity))
