"""Shared fixtures. Importing bnnprune_tf first makes tf.keras Keras 2."""

import gzip
import os
import pickle

import bnnprune_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)


def write_idx(path, array: np.ndarray):
    """Write ``array`` (uint8) as a gzip'd IDX file, the Fashion-MNIST format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_cifar_batch(path, images: np.ndarray, labels):
    """Write a CIFAR-10 python batch: pickled dict, data N x 3072 (R, G, B planes)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": list(labels), b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f)


@pytest.fixture(scope="session")
def mnist_small():
    from bnnprune_tf import data

    return data.load("mnist5k", seed=0, limit=600)


def require_tools(*names, packages="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
                  ) -> None:
    """Skip (with the fix) when the Cortex-M toolchain or QEMU (or the Debian ``packages``
    that provide ``names``) is missing, fail in CI."""
    import shutil

    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        msg = (f"{', '.join(missing)} missing: sudo apt-get install --no-install-recommends "
               f"{packages}")
        if os.environ.get("BNNPRUNE_REQUIRE_DATA") or os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def require_data(path) -> None:
    """Skip (with the fix) when optional system data is missing, fail in CI."""
    if not os.path.exists(path):
        msg = f"{path} missing: sudo apt-get install dataset-fashion-mnist"
        if os.environ.get("BNNPRUNE_REQUIRE_DATA"):
            pytest.fail(msg)
        pytest.skip(msg)


#: tests that take a minute or more (``--durations``): started first, so that under
#: ``pytest -n 2`` the other worker runs the many short tests meanwhile and no long test
#: starts last (longest-first scheduling; xdist's default ``load`` hands the first tests
#: out in turn, so the long ones alternate between the workers; ``worksteal`` would
#: give them all to one)
LONG_FIRST = ("test_main_job.py::", "test_resume.py::test_killed_runs",
              "test_distribute.py::test_multi_worker", "test_distribute.py::test_mirrored",
              "test_shrink_property.py::", "test_arena.py::")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, key in enumerate(LONG_FIRST) if key in item.nodeid),
                    len(LONG_FIRST))

    items.sort(key=rank)          # stable: the other tests keep their order
