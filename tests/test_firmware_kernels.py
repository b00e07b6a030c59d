"""The C runtime's layouts for pruned layers, bit-exact against Python and the reference
kernels on the host and Cortex-M4/M55: BNN_BCONV_PAIRS (16 input channels, two output
pixels per pass) and BNN_BCONV_MASKED (ternary, zeros scattered through every word)."""

import re
import subprocess
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import masks
from converters import c_export, fold
from conftest import require_tools
from test_fold import randomize_batchnorm

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def pruned_bnn(seed=0):
    """A first conv with stride 2 (padded at the bottom and right only); binary convs on
    16 channels: "+1" padding with 40 filters (two blocks of 32), valid padding with
    stride 2 and an odd output width (a last pair without pixel B), zero padding (not
    paired); and a ternary conv on 40 channels (taps packed without padding bits) with
    half its weights zero, scattered."""
    tf.keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
    layers = tf.keras.layers
    inputs = tf.keras.Input((28, 28, 1))
    x = lq.layers.QuantConv2D(16, 3, strides=2, padding="same", pad_values=1.0,
                              kernel_quantizer="ste_sign", use_bias=False)(inputs)   # stride 2
    x = layers.BatchNormalization(scale=True)(x)                                     # 14x14x16
    x = lq.layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, **binary)(x)
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(36, 3, padding="same", pad_values=1.0, name="scattered",
                              **binary)(x)
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(16, 3, **binary)(x)                                   # 12x12x16
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(16, 3, strides=2, **binary)(x)                        # 5x5x16
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(16, 3, padding="same", **binary)(x)                   # zero pad
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(10, 5, **binary)(x)
    x = layers.Flatten()(layers.BatchNormalization(scale=True)(x))
    model = tf.keras.Model(inputs, layers.Activation("softmax")(x))
    model = masks.prunable(randomize_batchnorm(model, seed, dead_channel=False))  # no 0 filter
    layer = model.get_layer("scattered")
    keep = np.random.default_rng(seed).random(layer.weight_mask.shape) < 0.5
    layer.set_masks(weights=keep.astype("float32"))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_small):
    x, y = mnist_small.arrays("test", limit=4)
    model = pruned_bnn(seed=2)
    directory = tmp_path_factory.mktemp("pairs")
    c_export.write(model, directory, samples=x, labels=y)
    return model, directory, x


def test_pair_bits_hold_each_tap_twice():
    w = np.random.default_rng(0).choice([-1, 1], (3, 3, 3, 16))
    words = c_export.pair_bits(w)
    assert words.shape == (3, 9)
    np.testing.assert_array_equal(words & 0xffff, c_export.pack_bits(w.reshape(3, 9, 16))[..., 0])
    np.testing.assert_array_equal(words >> 16, words & 0xffff)
    assert (c_export.pair_bits(w[:, :2, :2]) [:, 4:] == 0).all()     # 4 taps, 2 zero words
    with pytest.raises(Exception, match="16 input channels"):
        c_export.pair_bits(w[..., :8])


def test_masked_stream_interleaves_signs_and_masks():
    w = np.random.default_rng(1).choice([-1, 0, 1], (2, 3, 3, 40))
    stream = c_export.masked_stream(w).reshape(2, -1, 2, 3)      # 12 words: 4 steps of 3
    np.testing.assert_array_equal(stream[:, :, 0].reshape(2, -1), c_export.filter_bits(w))
    np.testing.assert_array_equal(stream[:, :, 1].reshape(2, -1),
                                  c_export.filter_bits(np.where(w != 0, -1, 1)))
    assert c_export.masked_pays(w)                   # every word partial: no list pays
    blocks = w.copy()
    blocks[..., :32] = 0                             # most words empty: the lists skip them
    assert not c_export.masked_pays(blocks)


def test_export_picks_pairs_and_masked_layers(exported):
    _, directory, _ = exported
    ops = re.findall(r"\.op = (BNN_\w+), .*?\.in_c = (\d+)", (directory / "model_data.c").read_text())
    assert ops == [("BNN_CONV_FIRST", "1"), ("BNN_BCONV_PAIRS", "16"),
                   ("BNN_BCONV_MASKED", "40"), ("BNN_BCONV", "36"), ("BNN_BCONV_PAIRS", "16"),
                   ("BNN_BCONV", "16"), ("BNN_OUTPUT_CONV", "16")]
    header = (directory / "model_data.h").read_text()
    assert "#define BNN_OPS 0xcbu" in header       # first, binary, output, pairs, masked
    assert "#define BNN_TERNARY_PAIRS 0" in header  # no listed ternary layer: no pixel pairs


def test_op_numbers_follow_the_c_enum():
    enum = dict(re.findall(r"^  (BNN_\w+) = (\d+)", (FIRMWARE / "src/bnn.h").read_text(), re.M))
    assert {c_export.OPS[k]: str(v) for k, v in c_export.OP_NUMBERS.items()} == enum


@pytest.mark.parametrize("board,kernel", [("host", "opt"), ("host", "ref"),
                                          ("mps2-an386", "opt"), ("mps2-an500", "opt"),
                                          ("mps3-an547", "opt")])
def test_pairs_are_bit_exact(exported, board, kernel, tmp_path):
    """Every test vector's sums equal Python's exact ones (so the pairs, the reference
    kernel and Keras agree); classes equal Keras's."""
    model, directory, x = exported
    variables = [f"BOARD={board}", f"MODEL={directory}", f"BUILD={tmp_path}", f"KERNEL={kernel}"]
    if board == "host":
        require_tools("gcc", "make")
        subprocess.run(["make", "-s", "-C", str(FIRMWARE), "host", *variables], check=True,
                       capture_output=True, timeout=300)
        stdout = subprocess.run([str(tmp_path / "bnn")], capture_output=True, text=True,
                                timeout=60).stdout
    else:
        require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
        stdout = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "run", *variables],
                                capture_output=True, text=True, timeout=300).stdout
    assert "4 passed, 0 failed" in stdout, stdout
    classes = [int(c) for c in re.findall(r"test \d+: class (\d+)", stdout)]
    np.testing.assert_array_equal(classes, fold.keras_logits(model, x).argmax(1))
