"""Bit slices of 8-bit images: every pixel channel as its 8 bits, each a +-1 channel.

CBNN (Li, Zhang, Zhou & Ren, Neurocomputing 2020; ``../shared/reference/methods.md`` §3)
feeds a BNN the bit planes of its input: an 8-bit channel value ``p`` becomes the
8 values ``2 * bit_k(p) - 1`` (``k = 0`` the least significant bit), in
``(channel, bit)`` order: channel ``c``, kept slice number ``i`` lands at
``c * len(slices) + i`` (the official code's ``8 * c + k`` when all slices are kept).
Dropping the insensitive low-order slices shrinks the input; and since the input is
+-1, the first conv can be binary too (:func:`bnnprune_tf.models.build` with a
:class:`BitSlice` input, see :mod:`bnnprune_tf.methods.cbnn`).

The same arithmetic serves a Keras layer (so a saved model takes raw pixels) and a
``tf.data`` map. It uses float ``floor``/``floormod`` only, which are exact on the
integers 0..255 and convert with LCE/TFLite, unlike TensorFlow's bitwise ops.

The input contract: pixel values, integers 0..255 (``uint8`` or any numeric
dtype holding them, e.g. ``Dataset.pixels()``). Anything else (images normalized
to [0, 1] or [-1, 1], negative or fractional values) raises a ``DataError``
naming the expected range, never a silent wrong slicing.

Example::

    import numpy as np
    from bnnprune_tf.bitslice import BitSlice, bit_slices, reassemble

    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    s = bit_slices(x)                       # (1, 16, 16, 8) of +-1, LSB first
    assert (reassemble(s) == x).all()
    layer = BitSlice(slices=(5, 6, 7))      # the three most significant bits only
    layer(x).shape                          # -> (1, 16, 16, 3)
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf.errors import DataError, ModelError

BITS = 8
ALL = tuple(range(BITS))


def check_slices(slices: Iterable[int]) -> tuple[int, ...]:
    """``slices`` as a sorted tuple of distinct bit numbers 0 (LSB)..7 (MSB).

    Raises:
        ModelError: no slice kept, a bit number outside 0..7, or a repeated one.
    """
    try:
        kept = tuple(int(k) for k in slices)
    except (TypeError, ValueError):
        raise ModelError(f"slices must be bit numbers 0 (LSB) .. 7 (MSB), got {slices!r}") from None
    if not kept:
        raise ModelError("no bit slice kept: keep at least one of the bits 0 (LSB) .. 7 (MSB), "
                         "e.g. slices=(7,) for the most significant bit")
    bad = [k for k in kept if not 0 <= k < BITS]
    if bad:
        raise ModelError(f"slices {bad} are not bit numbers 0 (LSB) .. 7 (MSB) of an 8-bit pixel")
    if len(set(kept)) != len(kept):
        raise ModelError(f"slices {list(kept)} repeat a bit: name each kept bit once")
    return tuple(sorted(kept))


def top(count: int) -> tuple[int, ...]:
    """The ``count`` most significant slices, e.g. ``top(3) == (5, 6, 7)``."""
    if not 1 <= int(count) <= BITS:
        raise ModelError(f"keep 1 to {BITS} slices, got {count}")
    return tuple(range(BITS - int(count), BITS))


def _check_pixels(x: tf.Tensor) -> None:
    """Raise ``DataError`` unless every value of ``x`` is an integer in 0..255 (eager only)."""
    if x.dtype == tf.uint8:
        return
    v = np.asarray(x, np.float64)
    if v.size and (v.min() < 0 or v.max() > 255 or not np.array_equal(v, np.floor(v))):
        raise DataError(
            f"bit slicing expects 8-bit pixel values, integers in 0..255; got values in "
            f"[{v.min():g}, {v.max():g}]{'' if np.array_equal(v, np.floor(v)) else ' with fractions'}."
            " Pass the raw pixels (Dataset.pixels(), Dataset.split(...)), not images normalized "
            "to [0, 1] or [-1, 1]")


def _graph_check(x: tf.Tensor) -> tf.Tensor:
    """The same check inside a traced function (``model.fit``/``predict``)."""
    ok = tf.reduce_all((x >= 0) & (x <= 255) & tf.equal(x, tf.floor(x)))
    message = ("bit slicing expects 8-bit pixel values, integers in 0..255; pass the raw "
               "pixels (Dataset.pixels()), not images normalized to [0, 1] or [-1, 1]")
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, tf.reduce_min(x),
                                                           tf.reduce_max(x)])]):
        return tf.identity(x)


def bit_slices(images, slices: Sequence[int] = ALL, check: bool = True) -> tf.Tensor:
    """``[..., C]`` pixel values -> ``[..., C * len(slices)]`` float32 +-1 slices, ``(c, k)``
    order (the function a ``tf.data`` map and :class:`BitSlice` share).

    ``check`` validates the values (eagerly, or with an assertion when traced).

    Example::

        ds = ds.map(lambda x, y: (bit_slices(x, top(4)), y))
    """
    kept = check_slices(slices)
    x = tf.convert_to_tensor(images)
    if check and tf.executing_eagerly():
        _check_pixels(x)
    x = tf.cast(x, tf.float32)
    if check and not tf.executing_eagerly():
        x = _graph_check(x)
    scales = tf.constant([0.5 ** k for k in kept], tf.float32)       # exact powers of two
    # 4-D [N, pixels, C, 1] * [K]: TFLite broadcasts it; a 5-D product made the converter
    # store the constant at full size (25 KB for 28x28x8)
    flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:-1])), x.shape[-1], 1])
    bits = tf.math.floormod(tf.floor(flat * scales), 2.0)               # [N, pixels, C, K]
    shape = tf.concat([tf.shape(x)[:-1], [x.shape[-1] * len(kept)]], 0)
    out = tf.reshape(2.0 * bits - 1.0, shape)
    out.set_shape([*x.shape[:-1], x.shape[-1] * len(kept)])
    return out


def reassemble(signs, slices: Sequence[int] = ALL) -> np.ndarray:
    """The inverse of :func:`bit_slices` over the kept bits: ``sum_k 2**k * (s + 1) / 2`` per
    channel (the dropped bits read as 0), as uint8.

    Example::

        reassemble(bit_slices(x)) == x      # all 8 slices: exact
    """
    kept = check_slices(slices)
    s = np.asarray(signs)
    bits = ((s.reshape(*s.shape[:-1], -1, len(kept)) + 1) // 2).astype(np.int64)
    return (bits << np.asarray(kept)).sum(axis=-1).astype(np.uint8)


def randomize(signs: np.ndarray, slices: Sequence[int], channels: int, kept: Sequence[int] = ALL,
              seed: int = 0) -> np.ndarray:
    """A copy of bit-sliced inputs (``(c, k)`` order over ``kept``) with the bits
    ``slices`` replaced by uniform random +-1 in **all** ``channels`` colour channels.

    This is the intended semantics of CBNN's sensitivity test (the official script's
    ``x[:, bit:8:24]`` picks the red channel only; methods.md §3.1 step 4).

    Example::

        noisy = randomize(bit_slices(x).numpy(), (0, 1), channels=1)   # two LSBs noise
    """
    kept = check_slices(kept)
    out = np.array(signs, np.float32, copy=True)
    picked = [k for k in slices]
    missing = [k for k in picked if k not in kept]
    if missing:
        raise ModelError(f"slices {missing} are not among the kept slices {list(kept)}")
    if not picked:
        return out
    columns = [c * len(kept) + kept.index(k) for c in range(channels) for k in picked]
    rng = np.random.default_rng(seed)
    out[..., columns] = rng.choice(np.array([-1.0, 1.0], np.float32),
                                   size=(*out.shape[:-1], len(columns)))
    return out


@tf.keras.utils.register_keras_serializable("bnnprune")
class BitSlice(tf.keras.layers.Layer):
    """Keras layer: raw pixels (integers 0..255) -> their kept bit slices as +-1 channels.

    ``slices`` are the kept bit numbers (0 = LSB .. 7 = MSB), output channel
    ``c * len(slices) + i`` for colour channel ``c`` and the ``i``-th kept bit.
    Values outside 0..255 or with fractions raise an error (``DataError`` eagerly,
    ``InvalidArgumentError`` inside ``fit``/``predict``), naming the expected range.

    Example::

        inputs = tf.keras.Input((28, 28, 1))          # float32 pixel values 0..255
        x = BitSlice(slices=(4, 5, 6, 7))(inputs)     # 4 channels of +-1
    """

    def __init__(self, slices: Sequence[int] = ALL, **kwargs):
        super().__init__(**kwargs)
        self.slices = check_slices(slices)

    def call(self, inputs):
        return bit_slices(inputs, self.slices)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] * len(self.slices))

    def get_config(self):
        return {**super().get_config(), "slices": list(self.slices)}
