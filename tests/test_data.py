import numpy as np
import pytest

from bnnprune_tf import data
from bnnprune_tf.errors import DataError
from conftest import require_data, write_cifar_batch, write_idx


def test_mnist5k_split_sizes_and_determinism():
    a = data.load("mnist5k", seed=0)
    b = data.load("mnist5k", seed=0)
    c = data.load("mnist5k", seed=1)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (3600, 400, 1000)
    assert a.input_shape == (28, 28, 1) and a.num_classes == 10
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int32
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    # the three splits partition the 5,000 images
    allx = np.concatenate([a.x_train, a.x_val, a.x_test]).reshape(5000, -1)
    assert len(np.unique(allx, axis=0)) == len(np.unique(
        data.SOURCES["mnist5k"](None)[0].reshape(5000, -1), axis=0))
    assert set(np.unique(a.y_train)) == set(range(10))


def test_digits_scales_16_levels_to_uint8():
    ds = data.load("digits")
    assert ds.input_shape == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0


def test_normalize_maps_to_minus_one_one():
    x = np.array([0, 255], dtype=np.uint8)
    np.testing.assert_allclose(data.normalize(x).numpy(), [-1.0, 1.0])


def test_batches_shapes_shuffle_and_augment(mnist_small):
    xb, yb = next(iter(mnist_small.batches("train", batch_size=32)))
    assert xb.shape == (32, 28, 28, 1) and yb.shape == (32,)
    assert float(xb.numpy().min()) >= -1.0 and float(xb.numpy().max()) <= 1.0
    plain = next(iter(mnist_small.batches("train", 32)))[0].numpy()
    np.testing.assert_allclose(plain, mnist_small.arrays("train", 32)[0])
    shuffled = next(iter(mnist_small.batches("train", 32, shuffle=True, seed=3)))[1].numpy()
    assert not np.array_equal(shuffled, mnist_small.y_train[:32])
    aug = next(iter(mnist_small.batches("train", 32, augment=("shift", "flip"), seed=1)))[0]
    assert aug.shape == plain.shape and not np.allclose(aug.numpy(), plain)
    with pytest.raises(DataError, match="unknown augmentation \\['rotate'\\]"):
        mnist_small.batches("train", augment=("rotate",))


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'mnist6k': use one of mnist5k, digits"):
        data.load("mnist6k")


def test_bad_fractions_and_split():
    with pytest.raises(DataError, match="val_fraction must be between 0 and 1"):
        data.load("digits", val_fraction=1.5)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        data.load("digits").split("dev")


def _fake_fashion(tmp_path, n_train=50, n_test=20):
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", xs)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    xt = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)
    return xs, xt


def test_fashion_mnist_from_user_directory(tmp_path):
    xs, xt = _fake_fashion(tmp_path)
    ds = data.load("fashion_mnist", path=tmp_path, val_fraction=0.2)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (40, 10, 20)
    np.testing.assert_array_equal(ds.x_test[..., 0], xt)  # official test split kept in order
    np.testing.assert_array_equal(ds.y_test, np.arange(20) % 10)


def test_fashion_mnist_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", path=tmp_path)
    _fake_fashion(tmp_path)
    with open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not gzip")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is not a readable .gz file"):
        data.load("fashion_mnist", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((3, 2), np.uint8))
    with pytest.raises(DataError, match="not an IDX file of uint8 with 1 dimension"):
        data.load("fashion_mnist", path=tmp_path)


def test_fashion_mnist_debian_package():
    require_data(data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    ds = data.load("fashion_mnist")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (54000, 6000, 10000)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_cifar10_from_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    for i in range(1, 6):
        write_cifar_batch(tmp_path / f"data_batch_{i}", images[:10], range(10))
    write_cifar_batch(tmp_path / "test_batch", images[10:], [3, 7])
    ds = data.load("cifar10", path=tmp_path, val_fraction=0.1)
    assert ds.input_shape == (32, 32, 3)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (45, 5, 2)
    np.testing.assert_array_equal(ds.x_test, images[10:])  # channel order survives
    assert ds.y_test.tolist() == [3, 7]


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="cifar10 needs path=DIR"):
        data.load("cifar10")
    with pytest.raises(DataError, match="must hold data_batch_1..5 and test_batch"):
        data.load("cifar10", path=tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"garbage")
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR-10 python batch"):
        data.load("cifar10", path=tmp_path)
    write_cifar_batch(tmp_path / "data_batch_1", np.zeros((2, 32, 32, 3), np.uint8), [1])
    with pytest.raises(DataError, match="'data' must be N x 3072 with N labels"):
        data.load("cifar10", path=tmp_path)
