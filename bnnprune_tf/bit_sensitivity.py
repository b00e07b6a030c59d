"""Bit-level sensitivity (CBNN): how much a trained model needs each input bit slice.

The test of CBNN's official ``cifar10_run.py`` (``../shared/reference/methods.md`` §3.1
step 4), with its intended semantics: a slice is randomized in **all** colour
channels (the script's ``x[:, bit:8:24]`` touches the red channel only). Two scans on
validation data, no retraining:

- ``single[k]``: bit ``k`` alone replaced by uniform random bits;
- ``lowest[k]``: the ``k`` lowest bits replaced, ``k = 0..8`` (``lowest[0]`` is the
  unmodified baseline, ``lowest[8]`` pure noise, about chance).

The model takes raw pixels (a :class:`bnnprune_tf.bitslice.BitSlice` input), so a
slice is randomized by rewriting that bit of the pixels: exactly the slice's +-1
channel replaced by random +-1. Costs are integer counts of correctly classified
images. :meth:`BitSensitivity.kept_slices` keeps the most significant slices such
that randomizing all the others costs at most ``delta``.

Example::

    from bnnprune_tf import bit_sensitivity, files

    x, y = ds.pixels().arrays("val")
    result = bit_sensitivity.analyze(sliced_model, x, y)
    kept = result.kept_slices(delta=0.005)          # e.g. (4, 5, 6, 7)
    print(result.to_markdown())
    files.write_bytes("bit_sensitivity.png", render_png(result.figure(0.005)))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from bnnprune_tf.bitslice import BITS, top
from bnnprune_tf.errors import DataError, ModelError
from bnnprune_tf.reporting import Figure, markdown_table


def randomize_bits(pixels: np.ndarray, bits, seed: int = 0) -> np.ndarray:
    """A copy of ``pixels`` (integers 0..255) with the bit numbers ``bits`` replaced by
    uniform random bits, independently in every pixel and colour channel.

    Example::

        randomize_bits(x, (0, 1, 2))      # the three lowest slices become noise
    """
    p = _require_pixels(pixels)
    mask = int(sum(1 << int(k) for k in bits))
    if not mask:
        return p.copy()
    p8 = p.astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 256, p8.shape, dtype=np.uint8)
    return ((p8 & ~np.uint8(mask)) | (noise & np.uint8(mask))).astype(p.dtype)


def _require_pixels(pixels) -> np.ndarray:
    p = np.asarray(pixels)
    if p.size and (p.min() < 0 or p.max() > 255 or not np.array_equal(p, np.floor(p))):
        raise DataError("bit sensitivity needs raw pixels, integers in 0..255 "
                        "(Dataset.pixels().arrays(...)), not normalized images")
    return p


def correct(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> int:
    """Images of ``(x, y)`` that ``model`` classifies correctly (argmax), as an integer."""
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return int(np.sum(np.argmax(predictions.reshape(len(x), -1), axis=-1) == np.asarray(y)))


@dataclass(frozen=True)
class BitSensitivity:
    """Correct counts on ``samples`` validation images: ``baseline`` unmodified,
    ``single[k]`` with bit ``k`` randomized, ``lowest[k]`` with the ``k`` lowest bits
    randomized (``k = 0..8``)."""

    samples: int
    baseline: int
    single: tuple[int, ...]
    lowest: tuple[int, ...]

    def cost(self, count: int) -> float:
        """Accuracy points lost by a scan point with ``count`` correct images."""
        return 100.0 * (self.baseline - count) / self.samples

    def kept_slices(self, delta: float) -> tuple[int, ...]:
        """The fewest most-significant slices such that randomizing all lower ones costs
        at most ``delta`` (a fraction of the images: 0.005 = half a point), compared
        as integer counts. At least the MSB is kept."""
        if delta < 0:
            raise ModelError(f"delta must be >= 0 (a fraction of accuracy), got {delta}")
        allowed = int(np.floor(delta * self.samples + 1e-9))
        dropped = max(k for k in range(BITS) if self.baseline - self.lowest[k] <= allowed)
        return top(BITS - dropped)

    def rows(self) -> dict[str, dict]:
        """One row per bit number: accuracy with that bit randomized and with the
        bits 0..k randomized, and their costs in points."""
        rows = {"none": {"randomized bit: accuracy": self.baseline / self.samples,
                         "cost (pt)": 0.0, "bits 0..k: accuracy": self.baseline / self.samples,
                         "cost 0..k (pt)": 0.0}}
        for k in range(BITS):
            rows[f"bit {k}"] = {"randomized bit: accuracy": self.single[k] / self.samples,
                                "cost (pt)": self.cost(self.single[k]),
                                "bits 0..k: accuracy": self.lowest[k + 1] / self.samples,
                                "cost 0..k (pt)": self.cost(self.lowest[k + 1])}
        return rows

    def to_markdown(self) -> str:
        return markdown_table(self.rows(), "bit (0 = LSB)")

    def figure(self, delta: float | None = None) -> Figure:
        """Cost in points per randomized bit and per number of lowest bits randomized."""
        hlines = {f"delta {100 * delta:g} pt": 100 * delta} if delta is not None else {}
        return Figure("Bit-level sensitivity (validation, no retraining)", "line", {
            "one slice randomized (all channels)": {
                "x": list(range(BITS)), "series": {"cost (pt)": [self.cost(c) for c in self.single]}},
            "k lowest slices randomized": {
                "x": list(range(BITS + 1)), "series": {"cost (pt)": [self.cost(c) for c in self.lowest]}},
        }, xlabel="bit k (0 = LSB) / k", ylabel="accuracy lost (points)", hlines=hlines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BitSensitivity":
        """The analysis back from :meth:`to_dict` (e.g. read from JSON)."""
        return cls(values["samples"], values["baseline"], tuple(values["single"]),
                   tuple(values["lowest"]))


def analyze(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, seed: int = 0) -> BitSensitivity:
    """Both scans of ``model`` (raw-pixel input) on ``(x, y)``; see the module docstring."""
    if len(x) != len(y) or not len(x):
        raise ModelError(f"need equally many images and labels (> 0), got {len(x)} and {len(y)}")
    _require_pixels(x)
    baseline = correct(model, x, y)
    single = tuple(correct(model, randomize_bits(x, (k,), seed + k), y) for k in range(BITS))
    lowest = tuple(correct(model, randomize_bits(x, range(k), seed + 100 + k), y)
                   for k in range(BITS + 1))
    return BitSensitivity(len(x), baseline, single, lowest)
