"""BatchNorm thresholds of binary layers, placed where float rounding cannot move them.

A binary conv (sign input, sign kernel) computes integer sums ``S``. When its
BatchNorm output only reaches signs (the next binary layer's input quantizer, through
max-pooling, flattening or dropout), BatchNorm is a threshold on ``S``: the output is
+1 where ``gamma * (S + bias - mean) / sqrt(var + eps) + beta >= 0``. If that threshold
falls on an integer within float32 rounding, Keras and LCE (which folds BatchNorm into
its own float32 threshold) can decide that sum differently, and the difference
propagates to the logits. :func:`centered` moves every such threshold half-way between
two integers, keeping the decision float64 takes at every integer sum; so Keras, LCE
and :mod:`converters.fold` (float64) agree, and no sign the model computes in float64
changes.

Example::

    from bnnprune_tf import thresholds
    safe = thresholds.centered(model)     # a copy (model untouched)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, models
from bnnprune_tf.errors import ConversionError

layers = tf.keras.layers
_PASS = (layers.MaxPooling2D, layers.Flatten, layers.Reshape, layers.Dropout)


def _consumers(layer) -> list:
    return [node.outbound_layer for node in layer._outbound_nodes]


def _reaches_only_signs(layer) -> bool:
    """Every path from ``layer``'s output ends in a sign input quantizer, through layers
    that commute with a sign (:data:`_PASS`)."""
    consumers = _consumers(layer)
    return bool(consumers) and all(
        _reaches_only_signs(c) if isinstance(c, _PASS) else
        isinstance(c, layers.Layer) and layer_facts.is_binary_input(c) for c in consumers)


def sum_step(layer) -> np.ndarray | None:
    """Per output channel, the magnitude of a sign-input conv's weights when every weight of
    the channel is +-that magnitude (a sign kernel: 1; a scaled sign: its scale), float64:
    the conv's outputs are then ``step * S + bias`` with ``S`` an integer sum. None for any
    other layer (zero weights, real-valued kernels, or no sign input)."""
    if not isinstance(layer, layers.Conv2D) or not layer_facts.is_binary_input(layer):
        return None
    magnitude = np.abs(np.asarray(layer_facts.quantized_kernel(layer), np.float64))
    magnitude = magnitude.reshape(-1, magnitude.shape[-1])
    return magnitude[0] if np.all(magnitude == magnitude[:1]) else None


def threshold_layers(model: tf.keras.Model) -> list[tuple[str, str]]:
    """``(conv, batchnorm)`` name pairs where the BatchNorm is a threshold on integer sums:
    it alone reads a conv with a :func:`sum_step`, and its output reaches only signs."""
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(layer._inbound_nodes) != 1 \
                or layer.axis not in ([-1], [3]):
            continue                       # not per output channel
        producer = layer._inbound_nodes[0].inbound_layers
        if isinstance(producer, layers.Layer) and len(_consumers(producer)) == 1 \
                and _reaches_only_signs(layer) and sum_step(producer) is not None:
            pairs.append((producer.name, layer.name))
    return pairs


def batchnorm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per channel of an inference-mode BatchNormalization, float64:
    ``y = scale * x + offset``.

    Example::

        scale, offset = batchnorm_affine(model.get_layer("conv2_bn"))
    """
    axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
    if axis not in (-1, 3, [3], [-1]):
        raise ConversionError(f"layer {layer.name!r}: BatchNormalization over axis {axis}; only "
                              "the channel axis (-1) can be folded")
    var = np.asarray(layer.moving_variance, np.float64)
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else np.ones_like(var)
    beta = np.asarray(layer.beta, np.float64) if layer.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - np.asarray(layer.moving_mean, np.float64) * scale


def sum_threshold(bn, bias=0.0, step=1.0) -> np.ndarray:
    """Per channel, the conv sum ``S`` (in units of ``step``, the kernel's magnitude; the
    conv adds ``bias``) at which ``bn``'s output is 0, float64; +-inf or nan where gamma
    is 0 or ``step`` is 0."""
    scale, offset = batchnorm_affine(bn)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(offset / scale + bias) / step


def _center(bn, bias, step) -> None:
    """Move ``bn``'s per-channel thresholds on ``S`` (the conv computes ``step * S +
    bias``) half-way between integers, in place."""
    scale, offset = batchnorm_affine(bn)
    live = (scale != 0) & (step != 0)      # a constant sign: nothing to move
    n = np.round(np.where(live, sum_threshold(bn, bias, step), 0.0))
    plus_at_n = scale * (step * n + bias) + offset >= 0
    # the half-integer next to n that keeps n's decision, for either sign of gamma * step
    target = np.where(plus_at_n != (scale * step > 0), n + 0.5, n - 0.5)
    mean = np.asarray(bn.moving_mean, np.float64)
    beta = np.where(live, scale * (mean - step * target - bias), np.asarray(bn.beta, np.float64))
    bn.beta.assign(beta.astype(np.float32))


def centered(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` whose BatchNorm thresholds on integer sums
    (:func:`threshold_layers`) lie half-way between two integers; every float64
    decision is kept (see the module docstring). ``model`` itself when it has no such
    threshold to move (none, or only BatchNorms without a ``beta``, which
    :mod:`converters.lint` reports); it is never modified."""
    pairs = [(c, b) for c, b in threshold_layers(model) if model.get_layer(b).center]
    if not pairs:
        return model
    copy = models.copy_model(model)
    for conv_name, bn_name in pairs:
        conv = copy.get_layer(conv_name)
        bias = np.asarray(conv.bias, np.float64) if conv.use_bias else 0.0
        _center(copy.get_layer(bn_name), bias, sum_step(conv))
    return copy
