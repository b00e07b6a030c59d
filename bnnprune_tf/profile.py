"""Per-layer cost of a BNN: binary MACs (BOPs), ternary and float MACs, parameters, memory.

The counting rules are Larq's (``larq.models.summary``), so totals agree with
it on any model: a MAC-containing layer does ``weights x output pixels`` MACs
per non-bias weight tensor, at the precision ``max(input precision, weight
precision)`` (a float input makes even binary weights a float MAC); a weight's
precision is its quantizer's (1 for ``ste_sign``, 2 for ``ste_tern``; see
:func:`bnnprune_tf.layer_facts.kernel_precision`), 32 otherwise. MACs and
parameters are binary at precision 1, ternary at precision 2 (ternary weights
or 2-bit inputs: a few binary ops each, not a float MAC), float above; BatchNorm's
``beta``/``moving_mean`` and ``gamma``/``moving_variance`` pairs count once
each, as they fold into one scale and one offset.

Masked models (:mod:`bnnprune_tf.masks`) count only what survives: unmasked
kernel entries, biases and BatchNorm parameters of kept channels, so a masked
model and its shrunk twin have the same profile.

Example::

    from bnnprune_tf import models, profile
    model = models.build("mnist_bnn", input_shape=(28, 28, 1))
    p = profile.profile(model)
    print(p.binary_macs, p.float_macs, p.memory_bytes)
    print(p.to_markdown())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, masks
from bnnprune_tf.errors import ModelError
from bnnprune_tf.layer_facts import MAC_LAYERS, PER_CHANNEL, QUANT_LAYERS
from bnnprune_tf.reporting import markdown_table

_BN_FUSED_PAIRS = (("beta", "moving_mean"), ("gamma", "moving_variance"))


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer. MACs are per inference of one sample."""

    name: str
    kind: str
    output_shape: tuple
    binary_macs: int = 0
    ternary_macs: int = 0
    float_macs: int = 0
    binary_params: int = 0
    ternary_params: int = 0
    float_params: int = 0
    memory_bits: int = 0
    macs_by_precision: dict = field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        return self.memory_bits / 8


@dataclass(frozen=True)
class ModelCost:
    """Per-layer costs and their totals; :meth:`to_markdown` renders a table."""

    name: str
    layers: tuple[LayerCost, ...]

    def _total(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    binary_macs = property(lambda self: self._total("binary_macs"))
    ternary_macs = property(lambda self: self._total("ternary_macs"))
    float_macs = property(lambda self: self._total("float_macs"))
    binary_params = property(lambda self: self._total("binary_params"))
    ternary_params = property(lambda self: self._total("ternary_params"))
    float_params = property(lambda self: self._total("float_params"))
    memory_bits = property(lambda self: self._total("memory_bits"))
    memory_bytes = property(lambda self: self.memory_bits / 8)

    @property
    def macs_by_precision(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for layer in self.layers:
            for bits, n in layer.macs_by_precision.items():
                total[bits] = total.get(bits, 0) + n
        return total

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in the profile of {self.name!r}")

    def to_dict(self) -> dict:
        """JSON-ready: per-layer rows and totals."""
        totals = {k: getattr(self, k) for k in
                  ("binary_macs", "ternary_macs", "float_macs", "binary_params",
                   "ternary_params", "float_params", "memory_bytes")}
        return {"model": self.name, "totals": totals,
                "layers": [dict(asdict(l), memory_bytes=l.memory_bytes) for l in self.layers]}

    def rows(self, only_costly: bool = True) -> dict[str, dict]:
        """Table rows per layer plus a total; ``only_costly`` hides layers without
        params or MACs."""
        rows = {l.name: {"kind": l.kind, "output": str(l.output_shape),
                         "binary MACs": l.binary_macs, "float MACs": l.float_macs,
                         "binary params": l.binary_params, "float params": l.float_params,
                         "ternary MACs": l.ternary_macs, "memory (bytes)": l.memory_bytes}
                for l in self.layers if not only_costly or l.memory_bits or l.binary_macs
                or l.ternary_macs or l.float_macs}
        rows["**total**"] = {"binary MACs": self.binary_macs, "float MACs": self.float_macs,
                             "binary params": self.binary_params,
                             "float params": self.float_params,
                             "ternary MACs": self.ternary_macs,
                             "memory (bytes)": self.memory_bytes}
        return rows

    def to_markdown(self, only_costly: bool = True) -> str:
        """:meth:`rows` as a markdown table."""
        return markdown_table(self.rows(only_costly), "layer")


def _weight_name(weight) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def _counted_weights(layer, kept_channels: int | None):
    """``(weight, bits, number of weights that count)`` of a layer.

    A masked layer counts only unmasked kernel entries and bias entries of
    kept filters (its mask variables are bookkeeping); a per-channel layer
    (BatchNorm) of a masked model counts only ``kept_channels``.
    """
    if masks.is_masked(layer):
        out = [(layer._kernel_var(), int(layer.full_mask().numpy().sum()))]
        if getattr(layer, "use_bias", False):
            out.append((layer.bias, int(layer.channel_mask.numpy().sum())))
        return [(w, _bits(layer, w), n) for w, n in out]
    weights = list(layer.weights)
    if isinstance(layer, tf.keras.layers.BatchNormalization):
        names = [_weight_name(w) for w in weights]
        drop = {a for a, b in _BN_FUSED_PAIRS if a in names and b in names}
        weights = [w for w in weights if _weight_name(w) not in drop]
    counted = []
    for w in weights:
        count = int(np.prod(w.shape.as_list()))
        if kept_channels is not None:
            count = count // int(w.shape[-1]) * kept_channels
        counted.append((w, _bits(layer, w), count))
    return counted


def _bits(layer, weight) -> int:
    """Bits of one weight: a quantized kernel's precision, 32 for anything else."""
    if hasattr(weight, "quantizer"):          # a Larq QuantizedVariable
        return weight.precision or layer_facts.kernel_precision(layer)
    return 32


def _output_pixels(layer) -> int:
    shape = layer.output_shape
    if isinstance(shape, list):
        raise ModelError(f"layer {layer.name!r} has several outputs; it cannot be profiled")
    if len(shape) == 4:
        return int(np.prod(shape[1:3]))
    if len(shape) == 3:
        return int(shape[1])
    return 1


def layer_cost(layer: tf.keras.layers.Layer, kept_channels: int | None = None) -> LayerCost:
    """The cost of one (non-nested) layer; ``kept_channels`` as in :func:`_counted_weights`."""
    if not isinstance(layer, MAC_LAYERS) and hasattr(layer, "kernel"):
        raise ModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) has a kernel but is not a "
            "layer type whose operations we know how to count; use Keras/Larq "
            "convolution or dense layers"
        )
    params = {1: 0, 2: 0, 32: 0}
    memory_bits = 0
    macs: dict[int, int] = {}
    pixels = _output_pixels(layer) if isinstance(layer, MAC_LAYERS) else 0
    for w, bits, count in _counted_weights(layer, kept_channels):
        params[bits if bits <= 2 else 32] += count
        memory_bits += bits * count
        if pixels and "bias" not in w.name:
            precision = max(layer_facts.input_precision(layer), bits)
            macs[precision] = macs.get(precision, 0) + count * pixels
    shape = layer.output_shape
    return LayerCost(
        name=layer.name,
        kind=type(layer).__name__,
        output_shape=tuple(shape[1:]) if isinstance(shape, tuple) else (),
        binary_macs=macs.get(1, 0),
        ternary_macs=macs.get(2, 0),
        float_macs=sum(n for p, n in macs.items() if p > 2),
        binary_params=params[1],
        ternary_params=params[2],
        float_params=params[32],
        memory_bits=memory_bits,
        macs_by_precision=macs,
    )


def _flat_layers(model: tf.keras.Model, prefix: str = ""):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _flat_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix, layer


def _kept_channels(model) -> dict[str, int]:
    """Channels kept per BatchNorm layer of a masked model (dead channels do not count)."""
    from bnnprune_tf.graph import ChannelGraph

    graph = ChannelGraph(model)
    keep = graph.keep_from_masks(model)
    return {l.name: len(graph.keep_indices(graph.inputs[l.name], keep))
            for l in model.layers if isinstance(l, PER_CHANNEL)}


def profile(model: tf.keras.Model, require_quantized: bool = True) -> ModelCost:
    """Profile ``model`` layer by layer (nested models are flattened).

    Args:
        model: a built Keras (tf.keras / Keras 2) model.
        require_quantized: raise if the model has no Larq quantized layer (a
            plain float model is almost always a mistake here).

    Raises:
        ModelError: not a built tf.keras model, no Larq layer, or a layer whose
            operations cannot be counted.
    """
    if not isinstance(model, tf.keras.Model):
        raise ModelError(
            f"profile() needs a tf.keras (Keras 2) model, got {type(model).__module__}."
            f"{type(model).__name__}; load it with tf.keras.models.load_model after "
            "importing bnnprune_tf"
        )
    if not model.built:
        raise ModelError(f"model {model.name!r} is not built: call model.build(input_shape) first")
    flat = list(_flat_layers(model))
    if require_quantized and not any(isinstance(l, QUANT_LAYERS) for _, l in flat):
        raise ModelError(
            f"model {model.name!r} has no Larq quantized layer (QuantConv2D, QuantDense, ...): "
            "it is not a BNN. Build it with larq.layers, or pass require_quantized=False "
            "to profile a float model"
        )
    kept = _kept_channels(model) if any(masks.is_masked(l) for _, l in flat) else {}
    costs = []
    for prefix, layer in flat:
        cost = layer_cost(layer, kept.get(layer.name))
        costs.append(cost if not prefix else
                     LayerCost(**{**asdict(cost), "name": prefix + cost.name}))
    return ModelCost(model.name, tuple(costs))
