"""Bit slices: exact round trip (grey and RGB), kept slices, tf.data, the layer, bad input."""

import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import data, files
from bnnprune_tf.bitslice import BitSlice, bit_slices, randomize, reassemble, top
from bnnprune_tf.errors import DataError, ModelError
from conftest import write_cifar_batch


def every_pixel(channels):
    """All 256 values in every channel (shifted per channel so channels differ)."""
    v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    return np.concatenate([np.roll(v, 37 * c) for c in range(channels)], axis=-1)


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_every_value(channels):
    x = every_pixel(channels)
    s = bit_slices(x).numpy()
    assert s.shape == (1, 16, 16, 8 * channels)
    assert set(np.unique(s)) == {-1.0, 1.0}
    np.testing.assert_array_equal(reassemble(s), x)
    # (channel, bit) order, LSB first: channel 8c + k is bit k of colour channel c
    for c in range(channels):
        for k in range(8):
            np.testing.assert_array_equal(s[..., 8 * c + k] > 0, (x[..., c] >> k) & 1)


def test_kept_slices_are_the_high_bits():
    x = every_pixel(3)
    kept = top(3)
    s = bit_slices(x, kept).numpy()
    assert kept == (5, 6, 7) and s.shape[-1] == 9
    np.testing.assert_array_equal(reassemble(s, kept), x & 0b11100000)
    np.testing.assert_array_equal(s, bit_slices(x).numpy()[..., [8 * c + k for c in range(3)
                                                                 for k in kept]])


def test_rgb_cifar_batches_through_tf_data(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    for i in range(1, 3):
        write_cifar_batch(tmp_path / f"data_batch_{i}", images[:6], list(range(6)))
    write_cifar_batch(tmp_path / "test_batch", images[6:], list(range(6)))
    ds = data.load("cifar10", path=tmp_path, val_fraction=0.2).pixels()
    kept = (2, 7)
    sliced = ds.batches("test", batch_size=4).map(lambda x, y: (bit_slices(x, kept), y))
    got = np.concatenate([x.numpy() for x, _ in sliced])
    assert got.shape == (6, 32, 32, 6)
    np.testing.assert_array_equal(reassemble(got, kept), images[6:] & 0b10000100)


def test_layer_in_a_saved_model(tmp_path):
    inputs = tf.keras.Input((16, 16, 3))
    model = tf.keras.Model(inputs, BitSlice(top(4))(inputs))
    x = every_pixel(3).astype(np.float32)
    files.save_model(model, tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].slices == (4, 5, 6, 7)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), bit_slices(x, top(4)).numpy())


@pytest.mark.parametrize("bad", [every_pixel(1) / 255.0, every_pixel(1) / 127.5 - 1.0,
                                 every_pixel(1) + 0.5, np.full((1, 2, 2, 1), 256.0)])
def test_values_that_are_not_pixels_are_refused(bad):
    with pytest.raises(DataError, match="integers in 0..255"):
        bit_slices(bad)
    inputs = tf.keras.Input(bad.shape[1:])
    model = tf.keras.Model(inputs, BitSlice()(inputs))
    with pytest.raises(DataError, match="integers in 0..255"):
        model(bad.astype(np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="integers in 0..255"):
        model.predict(bad.astype(np.float32), verbose=0)


@pytest.mark.parametrize("slices, match", [((), "no bit slice kept"), ((8,), "0 \\(LSB\\)"),
                                           ((3, 3), "repeat"), ("ab", "bit numbers")])
def test_bad_slice_choices(slices, match):
    with pytest.raises(ModelError, match=match):
        BitSlice(slices)
    with pytest.raises(ModelError):
        top(0)


def test_randomize_touches_only_the_chosen_bit_in_every_channel():
    x = every_pixel(3)
    s = bit_slices(x).numpy()
    noisy = randomize(s, (1,), channels=3)
    changed = np.flatnonzero((noisy != s).any(axis=(0, 1, 2)))
    assert changed.tolist() == [1, 9, 17]              # bit 1 of R, G and B
    assert 0.3 < (noisy[..., [1, 9, 17]] != s[..., [1, 9, 17]]).mean() < 0.7
    np.testing.assert_array_equal(randomize(s, (), channels=3), s)
    with pytest.raises(ModelError, match="not among the kept"):
        randomize(bit_slices(x, top(2)).numpy(), (0,), channels=3, kept=top(2))
