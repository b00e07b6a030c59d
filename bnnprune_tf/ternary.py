"""Ternary quantizers with a trainable threshold per channel (Larq quantizers with state).

``q(x) = sign(x) * [|x| >= t_c]`` gives ``{-1, 0, +1}``; ``t_c`` is a trainable
threshold of channel ``c`` (the last axis): a conv's output filter for
:class:`TernaryWeight`, an input channel for :class:`TernaryActivation`. They
are the quantizers of ETB (:mod:`bnnprune_tf.methods.ternary_to_binary`): a
filter whose threshold falls to 0 is binary, one whose threshold passes its
largest ``|w|`` is all zero.

Gradients (``tf.custom_gradient``): ``x`` gets Larq's straight-through estimator
(identity where ``|x| <= 1``, as ``ste_sign``); ``t_c`` gets the derivative of the
smooth surrogate ``sign(x) * sigmoid((|x| - t_c) / T)``, summed over the channel.
Weight thresholds are relative: the threshold of filter ``c`` is ``t_c * u`` with
``u`` the mean ``|w|`` of the whole kernel (no gradient through ``u``), so a step of
the optimizer moves it by a share of the weights' scale, whatever that scale; the
surrogate's width is ``T = temperature * u``. Activations follow BatchNorm, so
their thresholds are absolute and ``T = temperature``.

The variable ``threshold`` holds ``t_c / speed``: with ``speed > 1`` the optimizer
moves thresholds ``speed`` times faster than the weights (a per-variable learning
rate without a custom optimizer).

A channel can be *decided* (the non-trainable ``decision``: -1 undecided, 0 binary,
1 zero): a binary channel computes exactly Larq's ``sign`` (+1 at 0), a zero
channel exactly 0, and its threshold gets no gradient.

Like every Larq quantizer they are Keras layers (serializable with
``get_config``, ``precision = 2``); unlike Larq's they own variables, so each
instance belongs to one layer and knows its channel count. They declare
``weight_domain = "ternary"`` (read by :func:`bnnprune_tf.layer_facts.weight_domain`)
and ``elementwise = True`` (each output depends on its own input and its own
channel's threshold, so a masked layer may quantize its whole kernel).

Example::

    import larq as lq
    conv = lq.layers.QuantConv2D(16, 3, input_quantizer=TernaryActivation(8),
                                 kernel_quantizer=TernaryWeight(16))
    y = conv(tf.ones((1, 5, 5, 8)))
    conv.kernel_quantizer.threshold      # 16 trainable thresholds
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

UNDECIDED, BINARY, ZERO = -1.0, 0.0, 1.0
_FAR = 1e9          # the threshold of a zero channel: above any value


def ternary(x: tf.Tensor, threshold: tf.Tensor, temperature: tf.Tensor | float,
            clip_value: float = 1.0) -> tf.Tensor:
    """``sign(x) * [|x| >= threshold]`` (thresholds broadcast on the last axis) with the
    straight-through gradient for ``x`` and a sigmoid-surrogate gradient for ``threshold``.

    Example::

        ternary(tf.constant([-0.5, 0.1, 0.0, 0.7]), tf.constant(0.2), 0.05)   # [-1, 0, 0, 1]
    """
    x = tf.convert_to_tensor(x)
    threshold = tf.cast(threshold, x.dtype)
    temperature = tf.cast(temperature, x.dtype)

    @tf.custom_gradient
    def _call(x, threshold):
        magnitude = tf.abs(x)
        y = lq.math.sign(x) * tf.cast(magnitude >= threshold, x.dtype)

        def grad(dy):
            dx = dy * tf.cast(magnitude <= clip_value, dy.dtype)
            s = tf.sigmoid((magnitude - threshold) / temperature)
            d_threshold = -dy * lq.math.sign(x) * s * (1.0 - s) / temperature
            axes = list(range(len(x.shape) - len(threshold.shape)))
            return dx, tf.reduce_sum(d_threshold, axis=axes)

        return y, grad

    return _call(x, threshold)


class _Ternary(lq.quantizers.Quantizer):
    """Shared state of the two quantizers: ``threshold`` and ``decision`` per channel."""

    precision = 2
    weight_domain = "ternary"
    elementwise = True

    def __init__(self, channels: int, initial: float = 0.0, temperature: float = 0.5,
                 speed: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.initial, self.temperature = int(channels), float(initial), \
            float(temperature)
        self.speed = float(speed)

    def build(self, input_shape):
        self.threshold = self.add_weight(
            name="threshold", shape=(self.channels,), trainable=True,
            initializer=tf.keras.initializers.Constant(self.initial / self.speed),
            constraint=lambda t: tf.clip_by_value(t, 0.0, 10.0 / self.speed))
        self.decision = self.add_weight(
            name="decision", shape=(self.channels,), trainable=False,
            initializer=tf.keras.initializers.Constant(UNDECIDED))
        super().build(input_shape)

    def effective_threshold(self) -> tf.Tensor:
        """The trainable threshold (times ``speed``) where undecided, 0 for binary channels,
        far for zero ones."""
        return tf.where(self.decision < 0, self.speed * self.threshold,
                        tf.where(self.decision > 0, _FAR, 0.0))

    def decide(self, binary: np.ndarray) -> None:
        """Fix each channel: binary (True) or zero (False)."""
        self.decision.assign(np.where(np.asarray(binary, bool), BINARY, ZERO).astype("float32"))

    def unit(self, inputs) -> tf.Tensor | float:
        """What a threshold of 1 means for ``inputs`` (1: absolute thresholds)."""
        return 1.0

    def call(self, inputs):
        if inputs.shape[-1] != self.channels:
            raise ValueError(f"{type(self).__name__} {self.name!r} has {self.channels} channels, "
                             f"got an input of shape {inputs.shape}")
        unit = self.unit(inputs)
        return ternary(inputs, self.effective_threshold() * unit, self.temperature * unit)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "initial": self.initial,
                "temperature": self.temperature, "speed": self.speed}


@tf.keras.utils.register_keras_serializable("bnnprune")
class TernaryWeight(_Ternary):
    """Ternary kernel quantizer, one trainable threshold per output filter.

    Thresholds are relative to the mean ``|w|`` of the kernel (see the module doc): a
    filter whose weights all lie below ``threshold * mean |kernel|`` is all zero.

    Example::

        lq.layers.QuantConv2D(32, 3, kernel_quantizer=TernaryWeight(32, initial=0.5))
    """

    def unit(self, inputs):
        return tf.stop_gradient(tf.reduce_mean(tf.abs(inputs))) + 1e-12

    def soft_zero_fraction(self, kernel) -> tf.Tensor:
        """Per filter, the smooth share of zero weights ``mean sigmoid((t - |w|) / T)``:
        differentiable in the thresholds only (the kernel is a constant here, so a term
        built on it moves the thresholds, never the latent weights)."""
        kernel = tf.stop_gradient(tf.convert_to_tensor(kernel))
        soft = tf.sigmoid((self.effective_threshold() - tf.abs(kernel) / self.unit(kernel))
                          / self.temperature)
        return tf.reduce_mean(soft, axis=list(range(len(kernel.shape) - 1)))

    def zero_fraction(self, kernel) -> np.ndarray:
        """Per filter, the share of weights the quantizer sets to 0."""
        kernel = np.abs(np.asarray(kernel, np.float32))
        zero = kernel < np.asarray(self.effective_threshold()) * np.float32(self.unit(kernel))
        return zero.reshape(-1, kernel.shape[-1]).mean(axis=0)


@tf.keras.utils.register_keras_serializable("bnnprune")
class TernaryActivation(_Ternary):
    """Ternary input quantizer, one trainable threshold per input channel.

    Example::

        lq.layers.QuantConv2D(32, 3, input_quantizer=TernaryActivation(16, initial=0.05))
    """
