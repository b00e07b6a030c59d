"""Facts about Keras and Larq layers, in one place: kinds, kernels, quantizers, domains.

Every other module asks here instead of deciding for itself:

- layer kinds: :data:`PRODUCERS` (conv/dense: they create channels),
  :data:`DEPTHWISE`, :data:`PER_CHANNEL` (a parameter per channel: BatchNorm,
  PReLU),
  :data:`MAC_LAYERS` (layers whose multiply-accumulates are counted),
  :data:`MASKABLE` (layers :mod:`bnnprune_tf.masks` can mask), :data:`TRACED`
  (``Lambda``/``TFOpLambda``: read from the TF ops they run, :data:`PASS_THROUGH_OPS`
  and :data:`ELEMENTWISE_OPS`);
- the kernel: :func:`kernel_attrs`, :func:`kernel_quantizer`,
  :func:`latent_kernel` (the float variable the optimizer updates),
  :func:`quantized_kernel` (what the layer computes with);
- precision and domain: :func:`kernel_precision` (bits, Larq's convention),
  :func:`weight_domain` (what the deployed weights are: binary, ternary,
  affine, float), :func:`is_binary`, :func:`is_binary_input`,
  :func:`is_binary_conv`, :func:`binary_kernel_layers`, :func:`is_elementwise`
  (whether a quantizer looks at each weight alone).

A quantizer's domain is read, in this order, from a ``weight_domain``
attribute it declares (a :class:`WeightDomain` or its value, e.g. an SBNN
quantizer declares ``"affine"``), else from its outputs on a fixed probe
kernel: ``+-alpha`` per output channel is binary (``ste_sign``,
``magnitude_aware_sign``, larq-zoo's ``xnor_weight_scale``), ``{-alpha, 0,
+alpha}`` ternary (``ste_tern``), two other values affine (``ste_heaviside``:
``{0, 1}``), anything else float (multi-bit DoReFa, no quantizer).

Example::

    from bnnprune_tf import layer_facts, models
    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    for layer in layer_facts.binary_kernel_layers(model):
        print(layer.name, layer_facts.weight_domain(layer), layer_facts.is_binary_input(layer))
"""

from __future__ import annotations

import enum

import larq as lq
import numpy as np
import tensorflow as tf
from tf_keras.src.layers.core.tf_op_layer import TFOpLambda   # what `x + y` records

layers = tf.keras.layers

PRODUCERS = (layers.Conv2D, layers.Dense)          # includes the Larq and masked subclasses
DEPTHWISE = (layers.DepthwiseConv2D,)              # includes QuantDepthwiseConv2D
PER_CHANNEL = (layers.BatchNormalization, layers.PReLU)
MAC_LAYERS = (
    lq.layers.QuantConv1D, lq.layers.QuantConv2D, lq.layers.QuantDense,
    lq.layers.QuantDepthwiseConv2D, lq.layers.QuantSeparableConv1D,
    lq.layers.QuantSeparableConv2D, layers.Conv1D, layers.Conv2D, layers.Dense,
    layers.DepthwiseConv2D, layers.SeparableConv1D, layers.SeparableConv2D,
)
QUANT_LAYERS = tuple(t for t in MAC_LAYERS if t.__module__.startswith("larq"))
TRACED = (layers.Lambda, TFOpLambda)   # read op by op from the TF graph they run
MASKABLE = (lq.layers.QuantConv2D, lq.layers.QuantDense, lq.layers.QuantDepthwiseConv2D,
            layers.Conv2D, layers.Dense, layers.DepthwiseConv2D)

#: TF ops that keep their input's channels, each output channel from the same input channel
PASS_THROUGH_OPS = frozenset({
    "Identity", "IdentityN", "StopGradient", "Cast", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu",
    "Sigmoid", "Tanh", "Softplus", "Softsign", "Abs", "Neg", "Sign", "Round", "Floor", "Ceil",
    "Square", "Sqrt", "Exp", "ClipByValue", "Minimum", "Maximum", "AddV2", "Add", "Sub", "Mul",
    "RealDiv", "Pow",
})
#: TF ops combining tensors channel by channel (operands of equal channels are tied)
ELEMENTWISE_OPS = frozenset({"AddV2", "Add", "Sub", "Mul", "Maximum", "Minimum", "RealDiv",
                             "SquaredDifference", "Pow"})

_DEPTHWISE_ATTRS = ("depthwise_kernel", "depthwise_constraint", "depthwise_quantizer")
_KERNEL_ATTRS = ("kernel", "kernel_constraint", "kernel_quantizer")


class WeightDomain(str, enum.Enum):
    """What a layer's deployed weights are (per output channel)."""

    BINARY = "binary"      # +-1, or +-alpha per output channel (scaling quantizers)
    TERNARY = "ternary"    # {-alpha, 0, +alpha}: ternary quantizers, or binary with weight masks
    AFFINE = "affine"      # two values {alpha, beta} (SBNN; ste_heaviside's {0, 1})
    FLOAT = "float"        # anything else: real or multi-bit weights


def kernel_attrs(layer_or_class) -> tuple[str, str, str]:
    """``(kernel, constraint, quantizer)`` attribute names of a conv/dense/depthwise layer.

    Example::

        kernel_attrs(lq.layers.QuantDepthwiseConv2D)
        # ('depthwise_kernel', 'depthwise_constraint', 'depthwise_quantizer')
    """
    cls = layer_or_class if isinstance(layer_or_class, type) else type(layer_or_class)
    return _DEPTHWISE_ATTRS if issubclass(cls, DEPTHWISE) else _KERNEL_ATTRS


def kernel_quantizer(layer):
    """The layer's kernel quantizer (a Larq quantizer or function), or None.

    Example::

        kernel_quantizer(lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign"))  # SteSign
    """
    return getattr(layer, kernel_attrs(layer)[2], None)


def input_quantizer(layer):
    """The layer's input quantizer, or None (plain Keras layers have none)."""
    return getattr(layer, "input_quantizer", None)


def latent_kernel(layer) -> tf.Variable:
    """The float latent kernel: the ``tf.Variable`` the optimizer updates.

    Works for masked (:mod:`bnnprune_tf.masks`) and plain, Larq and Keras
    conv/dense/depthwise layers (a Larq kernel is a ``QuantizedVariable``
    wrapping it).

    Example::

        np.abs(latent_kernel(model.get_layer("conv2")).numpy()).mean()
    """
    kernel = getattr(layer, kernel_attrs(layer)[0])
    return getattr(kernel, "latent_variable", kernel)


def quantized_kernel(layer) -> np.ndarray:
    """The kernel the layer computes with, as float32 numpy.

    A masked layer gives its effective kernel (pruned weights 0); a plain one
    its quantizer applied to the latent kernel (the latent kernel if none).

    Example::

        quantized_kernel(lq.layers.QuantConv2D(...))   # only -1 and +1 for ste_sign
    """
    if hasattr(layer, "effective_kernel"):
        return np.asarray(layer.effective_kernel(), np.float32)
    quantizer = kernel_quantizer(layer)
    latent = tf.constant(np.asarray(latent_kernel(layer)))   # custom gradients reject variables
    return np.asarray(quantizer(latent) if quantizer is not None else latent, np.float32)


_PROBE_VALUES = np.linspace(-2.0, 2.0, 41, dtype=np.float32)   # includes 0


_PART = np.abs(_PROBE_VALUES) <= 1
_PROBED: dict = {}


def _probe(quantizer, rank: int = 4, part: bool = False) -> np.ndarray | None:
    """``quantizer`` on a kernel of ``rank`` axes: two output channels of -2..2 (``part``:
    the first channel's weights within [-1, 1] only), or None.

    Results are cached per quantizer configuration (a probe runs TF ops; models have
    hundreds of quantized layers)."""
    config = quantizer.get_config() if hasattr(quantizer, "get_config") else {}
    key = (type(quantizer) if config else quantizer, rank, part,
           repr(sorted((k, v) for k, v in config.items() if k != "name")))
    if key not in _PROBED:
        column = np.stack([_PROBE_VALUES, 0.5 * _PROBE_VALUES], axis=-1)
        if part:
            column = column[_PART, :1]
        with tf.init_scope():     # eagerly, also when asked while Keras builds a graph
            x = tf.constant(column.reshape((1,) * (rank - 2) + column.shape))
            try:
                _PROBED[key] = np.asarray(quantizer(x), np.float32).reshape(column.shape)
            except Exception:  # a quantizer that cannot run on a probe is no known kind either
                _PROBED[key] = None
    return _PROBED[key]


def quantizer_domain(quantizer, rank: int = 4) -> WeightDomain:
    """The :class:`WeightDomain` of what ``quantizer`` outputs for a kernel of ``rank`` axes.

    Example::

        quantizer_domain(lq.quantizers.SteSign())              # BINARY
        quantizer_domain(lq.quantizers.MagnitudeAwareSign())   # BINARY (+-alpha)
        quantizer_domain(lq.quantizers.SteTern())              # TERNARY
        quantizer_domain(None)                                 # FLOAT
    """
    if quantizer is None:
        return WeightDomain.FLOAT
    declared = getattr(quantizer, "weight_domain", None)
    if declared is not None:
        return WeightDomain(declared)
    out = _probe(quantizer, rank)
    if out is None:
        return WeightDomain.FLOAT
    kinds = set()
    for channel in out.T:
        values = np.unique(channel)
        magnitudes = np.unique(np.abs(values))
        if len(values) == 2 and len(magnitudes) == 1 and magnitudes[0] > 0:
            kinds.add(WeightDomain.BINARY)
        elif len(values) == 3 and values[1] == 0 and values[0] == -values[2]:
            kinds.add(WeightDomain.TERNARY)
        elif len(values) == 2:
            kinds.add(WeightDomain.AFFINE)
        else:
            kinds.add(WeightDomain.FLOAT)
    return kinds.pop() if len(kinds) == 1 else WeightDomain.FLOAT


def is_elementwise(quantizer, rank: int = 4) -> bool:
    """True when each quantized weight depends on its own latent weight only, so
    quantizing part of a kernel gives that part of the quantized kernel (``ste_sign``,
    ``ste_tern``, or a quantizer declaring ``elementwise = True`` such as
    :class:`bnnprune_tf.ternary.TernaryWeight`); False for quantizers that scale by
    statistics of the kernel (``magnitude_aware_sign``, ``xnor_weight_scale``, DoReFa
    weights, TWN ``ste_tern``).

    Example::

        is_elementwise(lq.quantizers.SteSign())              # True
        is_elementwise(lq.quantizers.MagnitudeAwareSign())   # False: mean |w| per filter
    """
    if quantizer is None:
        return True
    declared = getattr(quantizer, "elementwise", None)   # e.g. a per-filter threshold
    if declared is not None:
        return bool(declared)
    whole = _probe(quantizer, rank)
    part = _probe(quantizer, rank, part=True)   # the first channel's weights within [-1, 1]
    return whole is not None and part is not None and np.array_equal(
        whole[_PART, :1], part)


def is_sign(quantizer) -> bool:
    """True when ``quantizer`` is Larq's sign: -1 below 0, +1 from 0 on (what ``LceQuantize``
    encodes: ``ste_sign``, ``approx_sign``, ``swish_sign``, ``SteSign(clip_value)``).

    Example::

        is_sign(lq.quantizers.SteSign())        # True
        is_sign(lq.quantizers.SteHeaviside())   # False: outputs 0 and 1
    """
    if quantizer is None:
        return False
    out = _probe(quantizer)
    sign = np.where(_PROBE_VALUES >= 0, 1.0, -1.0)[:, None]
    return out is not None and np.array_equal(out, np.broadcast_to(sign, out.shape))


def _has_weight_masks(layer) -> bool:
    mask = getattr(layer, "weight_mask", None)
    return mask is not None and not bool(np.all(np.asarray(mask) == 1))


def weight_domain(layer) -> WeightDomain:
    """What the deployed weights of a conv/dense/depthwise ``layer`` are.

    The kernel quantizer's domain (:func:`quantizer_domain`), except that a
    binary layer with weight masks zeroing weights inside its filters is
    ternary ``{-alpha, 0, +alpha}``. Layers without a kernel are FLOAT.

    Example::

        weight_domain(lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign"))  # BINARY
        weight_domain(tf.keras.layers.Dense(3))                                  # FLOAT
    """
    if not isinstance(layer, MAC_LAYERS):
        return WeightDomain.FLOAT
    rank = len(latent_kernel(layer).shape) if layer.built else 4
    domain = quantizer_domain(kernel_quantizer(layer), rank)
    if domain is WeightDomain.BINARY and _has_weight_masks(layer):
        return WeightDomain.TERNARY
    return domain


_DOMAIN_BITS = {WeightDomain.BINARY: 1, WeightDomain.AFFINE: 1, WeightDomain.TERNARY: 2}


def kernel_precision(layer) -> int:
    """Bits per kernel weight, Larq's convention: the quantizer's declared ``precision``
    (1 for ``ste_sign``, 2 for ``ste_tern``), else the bits of its domain, 32 if float.

    Example::

        kernel_precision(lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_tern"))   # 2
        kernel_precision(tf.keras.layers.Conv2D(8, 3))                               # 32
    """
    quantizer = kernel_quantizer(layer)
    declared = getattr(quantizer, "precision", None)
    if isinstance(declared, int):
        return declared
    return _DOMAIN_BITS.get(weight_domain(layer), 32) if quantizer is not None else 32


def input_precision(layer) -> int:
    """Bits per input value: the input quantizer's declared ``precision``, else 32."""
    return getattr(input_quantizer(layer), "precision", None) or 32


def is_binary(layer) -> bool:
    """True when ``layer``'s kernel is binary: +-1, or +-alpha per output channel.

    Example::

        is_binary(lq.layers.QuantConv2D(8, 3, kernel_quantizer="magnitude_aware_sign"))  # True
    """
    return weight_domain(layer) is WeightDomain.BINARY


def is_binary_input(layer) -> bool:
    """True when ``layer`` binarizes its input with Larq's sign (see :func:`is_sign`)."""
    return is_sign(input_quantizer(layer))


def is_binary_conv(layer) -> bool:
    """A ``Conv2D`` with a binary input and a binary kernel: what LCE can run as
    ``LceBconv2d`` (input channels packed in 32-bit words, outputs in blocks of 8).

    Example::

        is_binary_conv(lq.layers.QuantConv2D(8, 3, input_quantizer="ste_sign",
                                             kernel_quantizer="ste_sign"))   # True
    """
    return isinstance(layer, layers.Conv2D) and is_binary_input(layer) and is_binary(layer)


def binary_kernel_layers(model: tf.keras.Model) -> list:
    """The conv/dense layers of ``model`` whose kernel is binary (:func:`is_binary`).

    Example::

        [l.name for l in binary_kernel_layers(model)]   # ['conv_first', 'conv2', ...]
    """
    return [layer for layer in model.layers if isinstance(layer, PRODUCERS) and is_binary(layer)]
