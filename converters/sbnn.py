"""Deploying SBNN layers (:mod:`bnnprune_tf.sbnn`): weights ``{phi - tau, phi + tau}``.

The identity the deployment rests on (methods.md section 4.1), for +-1 inputs ``x``::

    conv(x, tau * S + phi) = tau * conv(x, S) + phi * conv(x, 1)          (LCE form)
                           = eta * conv(x, B) + xi * conv(x, 1)           (sparse form)

with ``S = sign(w)``, ``B = (S + 1) / 2`` in {0, 1} (the connections), ``eta = 2 tau``,
``xi = phi - tau``. ``conv(x, 1)``, the sum of the window, is one all-ones filter shared
by every output channel.

- LCE (:func:`lce_form`): each SBNN layer becomes a binary ``QuantConv2D`` with one more
  output channel, the all-ones filter, and :class:`SharedTerm` adds ``tau`` times the
  others and ``phi`` times it. The conv stays one ``LceBconv2d`` (float output); the
  combination is a slice, two multiplications and an add. Exact to float rounding.
- C runtime (:class:`AffineConv`, folded by :func:`converters.fold.fold`): the sums
  ``S_B = conv(x, B)`` over the connections only, and ``S_1 = conv(x, 1)`` once per
  pixel for all channels. BatchNorm and the sign fold into one integer comparison per
  channel, ``s * (S_B * 2**32 + P * S_1) >= T`` (int64), where ``P = round(2**32 * xi /
  eta)`` is the layer's ratio and ``s``, ``T`` per channel: the real decision rounded at
  ``2**-32`` of one step of ``S_B``. The firmware (``firmware/src/sbconv.c``) walks each
  filter's list of connections, so its work and its weight bytes follow the connections.
- TFLM int8: refused (:func:`check_tflm`): a binary conv is exported there as an int8
  conv on +-1 codes with weights +-1 (firmware.md section 8.2); weights {alpha, beta} need
  the all-ones term added per channel with a real ratio that int8 requantization cannot
  keep exact.

Example::

    from converters import lce, sbnn
    flatbuffer = lce.convert(sbnn.lce_form(model))
    lce.verify(model, flatbuffer, x_test, atol=1e-3)
"""

from __future__ import annotations


import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts
from bnnprune_tf import sbnn as sbnn_lib
from bnnprune_tf.errors import ConversionError
from converters.fold import AffineConv  # noqa: F401  (folded SBNN convs live in fold)

#: fixed-point scale of the C runtime's comparison: 2**32 units per step of S_B


@tf.keras.utils.register_keras_serializable(package="bnnprune")
class SharedTerm(tf.keras.layers.Layer):
    """``tau * z[..., :-1] + phi * z[..., -1:]``: the LCE form's combination of a binary
    conv's outputs with its last, all-ones channel."""

    def __init__(self, tau: float, phi: float, **kwargs):
        super().__init__(**kwargs)
        self.tau, self.phi = float(tau), float(phi)

    def call(self, z):
        return self.tau * z[..., :-1] + self.phi * z[..., -1:]

    def get_config(self):
        return {**super().get_config(), "tau": self.tau, "phi": self.phi}


def lce_form(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` with every :class:`~bnnprune_tf.sbnn.SBNNConv2D` as a binary conv of
    ``filters + 1`` outputs (the last one all-ones) followed by :class:`SharedTerm`; the
    same function, and what LCE converts to ``LceBconv2d``. ``model`` is untouched.

    Example::

        lce.convert(lce_form(model))
    """
    sparse = {layer.name for layer in sbnn_lib.sbnn_layers(model)}
    if not sparse:
        return model

    def clone(layer):
        config = layer.get_config()
        if layer.name not in sparse:
            return layer.__class__.from_config(config)
        config.pop("clip_value")
        conv = lq.layers.QuantConv2D.from_config({
            **config, "name": layer.name + "_ones", "filters": layer.filters + 1,
            "kernel_quantizer": "ste_sign", "use_bias": False})
        tau, phi = float(layer.tau), float(layer.phi)
        combine = SharedTerm(tau, phi, name=layer.name)
        return _Chain([conv, combine], layer)

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, copy.layers):
        if old.name not in sparse:
            new.set_weights(old.get_weights())
            continue
        kernel = np.asarray(layer_facts.latent_kernel(old))
        ones = np.ones(kernel.shape[:-1] + (1,), kernel.dtype)
        new.conv.kernel.latent_variable.assign(np.concatenate([kernel, ones], axis=-1))
        if old.use_bias:
            raise ConversionError(f"layer {old.name!r}: an SBNN conv with a bias; use "
                                  "use_bias=False with BatchNormalization after it")
    return copy


class _Chain(tf.keras.layers.Layer):
    """The binary conv and its :class:`SharedTerm`, under the SBNN layer's name."""

    def __init__(self, parts, original):
        super().__init__(name=original.name)
        self.conv, self.combine = parts

    def call(self, x):
        return self.combine(self.conv(x))


def rice_bits(values: np.ndarray, k: int) -> int:
    """Bits of ``values`` (>= 0) in a Rice code of parameter ``k``."""
    return int(((np.asarray(values, np.int64) >> k) + 1 + k).sum())


def connection_stream(conv: AffineConv) -> dict:
    """The C runtime's connection lists of ``conv`` (``firmware/src/sbconv.c``): the
    layer's connections in one sequence, filter after filter, each at its position
    ``filter * patch + (ky * c + ch) * kw + kx`` (patch order ky, c, kx); stored are the
    gaps to the previous position (from -1), minus 1, in a Rice code of parameter ``k``
    (the one giving the fewest bits for the layer): ``v >> k`` ones, a zero, the low ``k``
    bits; a bit stream in uint32 ``words``, LSB first, plus one zero word (the decoder
    reads one word ahead). A filter's end needs no mark and its count no storage: the
    positions say which filter a connection is in (``counts`` are for the caller).
    About ``log2(1 / share) + 1.5`` bits per connection: 5.8 at 5 %.

    Example::

        s = connection_stream(conv)
        s["connections"] == s["counts"].sum() == conv.weights.sum()
    """
    o = conv.weights.shape[0]
    order = conv.weights.transpose(0, 1, 3, 2).reshape(o, -1)      # OHWI -> (ky, c, kx)
    counts = order.sum(axis=1, dtype=np.int64)
    if counts.max(initial=0) > 65535:
        raise ConversionError(f"layer {conv.name!r}: a filter with more than 65535 connections")
    where = np.flatnonzero(order)
    values = np.diff(np.concatenate([[-1], where])) - 1
    k = min(range(24), key=lambda k: rice_bits(values, k))
    bits = []
    for v in values.astype(np.int64):
        bits += [1] * int(v >> k) + [0] + [(int(v) >> i) & 1 for i in range(k)]
    padded = np.zeros(-(-len(bits) // 32) * 32 + 32, np.uint64)
    padded[:len(bits)] = bits
    words = (padded.reshape(-1, 32) << np.arange(32, dtype=np.uint64)).sum(axis=1)
    return {"counts": counts, "connections": len(where),
            "words": words.astype(np.uint32), "k": k, "bits": len(bits)}


def decisions(conv: AffineConv) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, flips)``: the C runtime's form of ``conv``'s decision, output +1
    iff ``(u < thresholds) == flips`` with ``u = S_B * 2**32 + ratio * S_1``, the same
    as ``signs * u >= conv.thresholds`` (``T``): for a sign -1, ``-u >= T`` iff not
    ``u < 1 - T`` (flipped); a sign 0 gives the constant ``0 >= T``: the threshold is the
    int64 maximum, above every ``u``, flipped when ``0 >= T``.

    Example::

        thresholds, flips = decisions(conv)     # int64 and bool, one per output channel
    """
    t = np.asarray(conv.thresholds, np.int64)
    s = np.asarray(conv.signs)
    thresholds = np.where(s > 0, t, np.where(s < 0, 1 - t, np.iinfo(np.int64).max))
    return thresholds.astype(np.int64), (s < 0) | ((s == 0) & (t <= 0))


def check_tflm(model: tf.keras.Model) -> None:
    """Refuse SBNN layers for the TFLM int8 export, saying why (module docstring)."""
    names = [layer.name for layer in sbnn_lib.sbnn_layers(model)]
    if names:
        raise ConversionError(
            f"layers {', '.join(names)} have SBNN weights {{alpha, beta}}: the exact int8 TFLM "
            "export runs binary convs as int8 convs with weights +-1, and an {alpha, beta} "
            "layer also needs phi/tau times the window sum per channel, which one int8 "
            "requantization cannot keep exact. Deploy SBNN models with the C runtime "
            "(converters.c_export, sparse and exact) or LCE (converters.sbnn.lce_form)")
