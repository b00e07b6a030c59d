"""CBNN (Li, Zhang, Zhou & Ren, Neurocomputing 2020): prune input bit slices, shrink, retrain.

The method (``../shared/reference/methods.md`` §3): the network reads the bit slices
of its 8-bit input (:mod:`bnnprune_tf.bitslice`) instead of the pixels; a
sensitivity analysis on validation data (:mod:`bnnprune_tf.bit_sensitivity`) finds
the slices it needs; the others are dropped, the layer widths shrunk, and the
smaller network retrained from scratch (as the paper) or fine-tuned. We go one step
beyond the paper, whose first layer stays float: the input is +-1, so the first
conv is binary too and the whole network runs in XNOR-popcount (LCE: an
``LceBconv2d`` first layer; the C runtime: the packed pixel bits themselves).

:meth:`CBNN.run` on a trained model:

1. the *sliced baseline*: if ``model`` does not start with a :class:`BitSlice`, a
   copy of its architecture reading all 8 slices per channel (:func:`slice_input`)
   with a real-valued first conv as in the paper, trained from scratch for
   ``base_epochs``. Why real-valued here: a binary first conv gives every slice the
   same weight magnitude, so it cannot rank slices by significance (measured: on
   MNIST it leans on the redundant low bits as much as on the MSB);
2. kept slices: the fewest most significant slices whose complement, randomized,
   costs at most ``delta`` of the validation images (or ``slices`` given). Or, with
   ``slice_counts``, chosen on validation for the binary first conv that deploys: the
   ``k`` most significant slices for each ``k`` given, each trained at the smallest
   width; the most validation images correct wins (fewer slices on a tie). Why: the
   analysis runs on the real-valued first conv, which can down-weight the low bits; a
   binary first conv weighs every slice alike, so bits the analysis keeps can be noise
   to it (measured in ``benchmarks/results/arena.md``: ``cbnn_w50_s5`` beats
   ``cbnn_w50``, which keeps all 8);
3. candidates, smallest first: the sliced baseline with the kept slices and a binary
   first conv (:func:`keep_slices`) at every width factor ``f`` of ``widths`` (``selector:
   uniform``: each prunable group keeps ``f`` of its filters by L1, rounded to
   ``round_to``; ``selector: sensitivity``: the core's per-layer sensitivity spends
   the same binary-MAC budget ``f**2``), shrunk, re-initialised (``retrain:
   scratch``) or not (``finetune``) and trained ``epochs``;
4. the first (smallest) candidate whose validation correct count is within
   ``budget`` of the reference model's (``model`` itself) is the result. The test
   split is never read here (a benchmark reports it once per final model).

Example::

    from bnnprune_tf import data, methods, models, training

    ds = data.load("fashion_mnist")
    model = models.build("vgg_small", ds.input_shape, width=0.25)
    training.train(model, ds, epochs=4, learning_rate=1e-2)
    result = methods.get("cbnn")(delta=0.005, widths=[0.5, 0.75], epochs=4).run(
        model, methods.Context(ds, epochs=4, learning_rate=1e-2))
    result.metrics["slices"], result.metrics["width"]      # e.g. [4, 5, 6, 7], 0.5
    x, y = ds.pixels().arrays("test")                      # the model takes raw pixels
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import larq as lq
import numpy as np
import tensorflow as tf
from pydantic import Field, field_validator, model_validator

from bnnprune_tf import bit_sensitivity, bitslice, masks, profile, select, sensitivity
from bnnprune_tf.bitslice import BitSlice
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.layer_facts import PRODUCERS
from bnnprune_tf.methods.base import Context, Method, Params, Result, RoundTo
from bnnprune_tf.methods.registry import register
from bnnprune_tf.prune import prune_filters, strip_pruning

layers = tf.keras.layers


def bit_slice_layer(model: tf.keras.Model) -> BitSlice | None:
    """The model's :class:`BitSlice` layer, if it has one."""
    found = [layer for layer in model.layers if isinstance(layer, BitSlice)]
    return found[0] if found else None


def first_convs(model: tf.keras.Model, source) -> list:
    """The conv/dense layers that read ``source`` (a layer) directly."""
    return [layer for layer in model.layers if isinstance(layer, PRODUCERS)
            and any(n.inbound_layers is source or (isinstance(n.inbound_layers, list)
                                                   and source in n.inbound_layers)
                    for n in layer._inbound_nodes)]


def _functional_config(model: tf.keras.Model) -> dict:
    if not getattr(model, "_is_graph_network", False) or isinstance(model, tf.keras.Sequential) \
            or len(model.inputs) != 1:
        raise ModelError(f"model {model.name!r}: CBNN rewires the input of a functional model "
                         "with one input; build it with tf.keras.Model(inputs, outputs)")
    return _unbuilt(model.get_config())


def _unbuilt(config):
    """``config`` without Keras' ``build_config`` entries, so that layers whose input
    changes are built for their new input when called."""
    if isinstance(config, dict):
        return {k: _unbuilt(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_unbuilt(v) for v in config]
    return config


FIRST = ("binary", "float")


def _first_conv_config(config: dict, first: str) -> None:
    """Make a first conv's config read +-1 with binary weights (``"binary"``: XNOR-popcount,
    our deployment) or real weights (``"float"``: CBNN's baseline, whose first layer can
    weigh the slices by significance)."""
    if first not in FIRST:
        raise ModelError(f"first must be one of {', '.join(FIRST)}, got {first!r}")
    if first == "binary":
        config.update(input_quantizer=lq.quantizers.serialize(lq.quantizers.SteSign()),
                      kernel_quantizer=lq.quantizers.serialize(lq.quantizers.SteSign()),
                      kernel_constraint=tf.keras.constraints.serialize(lq.constraints.WeightClip()))
    else:
        config.update(input_quantizer=None, kernel_quantizer=None, kernel_constraint=None)


def slice_input(model: tf.keras.Model, slices=bitslice.ALL, first: str = "binary",
                seed: int | None = 0) -> tf.keras.Model:
    """A new model of ``model``'s architecture that reads raw pixels through
    :class:`BitSlice` ``slices``; its first conv(s) ``first`` (``"binary"`` or
    ``"float"``, see :func:`keep_slices`); freshly initialised (seeded), ``model``
    untouched.

    Example::

        sliced = slice_input(models.build("vgg_small", (28, 28, 1), width=0.25))
        sliced.layers[1]            # BitSlice: 8 channels of +-1 per input channel
    """
    if bit_slice_layer(model) is not None:
        raise ModelError(f"model {model.name!r} reads bit slices already; use keep_slices")
    config = _functional_config(model)
    source = config["input_layers"][0][0]
    readers = {l.name for l in first_convs(model, model.get_layer(source))}
    if not readers:
        raise ModelError(f"model {model.name!r}: no conv reads the input directly; CBNN needs "
                         "a first conv to read the bit slices")
    name = "bit_slice"
    for entry in config["layers"]:
        for node in entry["inbound_nodes"]:
            for ref in node:
                if ref[0] == source:
                    ref[0] = name
        if entry["config"]["name"] in readers:
            _first_conv_config(entry["config"], first)
    position = 1 + next(i for i, e in enumerate(config["layers"]) if e["name"] == source)
    config["layers"].insert(position, {
        "class_name": "bnnprune>BitSlice", "name": name,
        "config": {"name": name, "slices": list(bitslice.check_slices(slices)),
                   "trainable": True, "dtype": "float32"},
        "inbound_nodes": [[[source, 0, 0, {}]]]})
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    return tf.keras.Model.from_config(config, custom_objects=_custom_objects())


def _custom_objects() -> dict:
    return {"BitSlice": BitSlice, "bnnprune>BitSlice": BitSlice}


def keep_slices(model: tf.keras.Model, slices, first: str | None = None) -> tf.keras.Model:
    """A copy of a bit-sliced ``model`` that reads only ``slices`` (a subset of its own):
    the first conv keeps the kernel rows of those input channels, every other weight
    is copied. ``first`` (``"binary"``/``"float"``) switches the first conv's
    quantizers (its latent weights are kept); ``None`` keeps them. ``model`` is untouched.

    Example::

        deployable = keep_slices(sliced, (4, 5, 6, 7), first="binary")
    """
    layer = bit_slice_layer(model)
    if layer is None:
        raise ModelError(f"model {model.name!r} has no BitSlice input; use slice_input first")
    kept = bitslice.check_slices(slices)
    missing = [k for k in kept if k not in layer.slices]
    if missing:
        raise ModelError(f"slices {missing} are not read by model {model.name!r} "
                         f"(it reads {list(layer.slices)})")
    readers = {l.name for l in first_convs(model, layer)}
    config = _functional_config(model)
    for entry in config["layers"]:
        if entry["config"]["name"] == layer.name:
            entry["config"]["slices"] = list(kept)
        if entry["config"]["name"] in readers and first is not None:
            _first_conv_config(entry["config"], first)
    new = tf.keras.Model.from_config(config, custom_objects=_custom_objects())
    channels = model.inputs[0].shape[-1]
    rows = [c * len(layer.slices) + layer.slices.index(k) for c in range(channels) for k in kept]
    for old in model.layers:
        values = old.get_weights()
        if old.name in readers:
            values = [values[0][..., rows, :], *values[1:]]
        new.get_layer(old.name).set_weights(values)
    return new


def reinitialize(model: tf.keras.Model, seed: int) -> tf.keras.Model:
    """A freshly initialised (seeded) model of ``model``'s architecture."""
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.models.clone_model(model)


def binary_params(model: tf.keras.Model) -> int:
    """Binary weights (binary kernel and binary input) of ``model``."""
    return int(profile.profile(model).to_dict()["totals"]["binary_params"])


class CBNNParams(Params):
    """Parameters of :class:`CBNN` (see the module docstring)."""

    delta: float = Field(0.005, ge=0, lt=1)      # slice cost allowed (fraction of val images)
    slices: list[int] | None = None              # kept slices given: no analysis
    slice_counts: list[int] | None = None        # most significant slices to try (step 2)
    budget: float = Field(0.01, ge=0, lt=1)      # val accuracy drop allowed vs the reference
    widths: list[float] = [0.25, 0.375, 0.5, 0.75, 1.0]
    selector: Literal["uniform", "sensitivity"] = "uniform"
    retrain: Literal["scratch", "finetune"] = "scratch"
    base_epochs: int | None = Field(None, gt=0)  # sliced baseline; None = context.epochs
    round_to: RoundTo = 8
    seed: int = 0

    @field_validator("slices")
    @classmethod
    def _slices(cls, v):
        return None if v is None else list(bitslice.check_slices(v))

    @field_validator("slice_counts")
    @classmethod
    def _counts(cls, v):
        if v is not None and (not v or not all(1 <= k <= len(bitslice.ALL) for k in v)):
            raise ValueError(f"slice_counts are numbers of slices in 1..{len(bitslice.ALL)}, "
                             "at least one")
        return None if v is None else sorted(set(v))

    @model_validator(mode="after")
    def _one_slice_rule(self):
        if self.slices is not None and self.slice_counts is not None:
            raise ValueError("give slices (kept as given) or slice_counts (chosen on "
                             "validation), not both")
        return self

    @field_validator("widths")
    @classmethod
    def _widths(cls, v):
        if not v or not all(0 < f <= 1 for f in v):
            raise ValueError("widths are factors in (0, 1], at least one")
        return sorted(set(v))


@register("cbnn")
class CBNN(Method):
    """Bit-slice input pruning + width shrinking + retraining (CBNN), binary first layer."""

    Params = CBNNParams

    def check(self, model: tf.keras.Model) -> None:
        _functional_config(model)
        shape = model.inputs[0].shape
        if len(shape) != 4:
            raise ModelError(f"model {model.name!r}: CBNN slices image inputs (N, H, W, C), got "
                             f"input shape {tuple(shape)}")

    def prepare(self, model, validation_data=None, calibration_data=None):
        """The sliced model (kept ``slices``, default all 8) to train inside your own ``fit``
        on raw pixels (``Dataset.pixels()``): a new model; ``model`` is untouched."""
        self.check(model)
        kept = self.params.slices or bitslice.ALL
        if bit_slice_layer(model) is None:
            return slice_input(model, kept, "binary", self.params.seed)
        return keep_slices(model, kept, "binary")

    def finalize(self, model):
        return Result(strip_pruning(model), model, metrics={"binary_params": binary_params(model)})

    # ---------------------------------------------------------------- run
    def run(self, model: tf.keras.Model, context: Context) -> Result:
        self.check(model)
        p = self.params
        reference_view = context.dataset.pixels() if bit_slice_layer(model) else context.dataset
        pixels = replace(context, dataset=context.dataset.pixels())
        x_val, y_val = pixels.dataset.arrays("val")
        reference = bit_sensitivity.correct(model, *reference_view.arrays("val"))
        history = {}
        if bit_slice_layer(model) is None:
            base = slice_input(model, bitslice.ALL, "float", p.seed)
            epochs = p.base_epochs or context.epochs
            history["sliced baseline"] = pixels.train(base, epochs, context.learning_rate,
                                                      seed=p.seed)
        else:
            base = model
        analysis = bit_sensitivity.analyze(base, x_val, y_val, seed=p.seed)
        allowed = int(np.floor(p.budget * len(y_val) + 1e-9))
        rows, trained = {}, {}

        def candidate(kept, factor):
            """The trained candidate of ``kept`` slices at width ``factor``, and its count."""
            if (kept, factor) not in trained:
                model = self._shrink(keep_slices(base, kept, "binary"), factor, x_val, y_val)
                if p.retrain == "scratch":
                    model = reinitialize(model, p.seed)
                label = f"{len(kept)} slices, width {factor}"
                history[label] = pixels.train(model, p.epochs, p.learning_rate, seed=p.seed)
                count = bit_sensitivity.correct(model, x_val, y_val)
                rows[label] = {"binary params": binary_params(model), "val correct": count,
                               "val accuracy": count / len(y_val),
                               "within budget": reference - count <= allowed}
                context.log(f"cbnn: slices {list(kept)} width {factor}: {count}/{len(y_val)} "
                            f"(reference {reference}, allowed drop {allowed})")
                trained[kept, factor] = model, count
            return trained[kept, factor]

        if p.slice_counts:       # chosen on validation, binary first conv, smallest width
            options = [bitslice.top(k) for k in p.slice_counts]
            kept = max(options, key=lambda o: (candidate(o, p.widths[0])[1], -len(o)))
        else:
            kept = tuple(p.slices) if p.slices else analysis.kept_slices(p.delta)
        for factor in p.widths:          # smallest first: the first within the budget
            final, count = candidate(kept, factor)
            if reference - count <= allowed:
                break
        notes = [] if reference - count <= allowed else [
            f"No candidate met the budget ({p.budget:.3g} of validation images); the widest "
            f"(width {factor}) is returned."]
        notes.append("Input contract: raw pixel values 0..255 (uint8 cast to float32); the "
                     f"model's BitSlice layer keeps bits {list(kept)} (0 = LSB) of each channel.")
        return Result(final, final, notes=notes, metrics={
            "input": "pixels", "slices": list(kept), "width": factor, "selector": p.selector,
            "retrain": p.retrain, "epochs_trained": p.epochs, "val_correct": count,
            "reference_val_correct": reference,
            "val_samples": len(y_val), "binary_params": binary_params(final),
            "sensitivity": analysis.to_dict(),
            "history": history[f"{len(kept)} slices, width {factor}"],
            "histories": history},
            tables={"bit-level sensitivity (validation)": analysis.rows(),
                    "candidates (validation)": rows},
            figures={"bit_sensitivity": analysis.figure(p.delta)})

    def _shrink(self, model: tf.keras.Model, factor: float, x_val, y_val) -> tf.keras.Model:
        """``model`` with each prunable group at ``factor`` of its filters (uniform) or the
        operations of that uniform model spread by per-layer sensitivity; shrunk, weights
        kept."""
        if factor == 1.0:
            return strip_pruning(masks.prunable(model))
        uniform = strip_pruning(prune_filters(model, "l1", ratio=1.0 - factor,
                                              round_to=self.params.round_to))
        if self.params.selector == "uniform":
            return uniform
        level = sensitivity.ChannelLevel(select.get_criterion("l1"), self.params.round_to)
        result = sensitivity.analyze(model, level, x_val, y_val, progress=False)
        target = sensitivity.operations(uniform)
        budget = target / sensitivity.operations(model)
        for _ in range(8):      # channel-level savings are estimated: tighten until within
            masked = masks.prunable(model)
            level.apply(masked, result.ratios_for_budget(budget), ChannelGraph(masked))
            shrunk = strip_pruning(masked)
            operations = sensitivity.operations(shrunk)
            if operations <= target:
                break
            budget *= target / operations
        return shrunk
