"""A CBNN model deployed: LCE (binary first layer, no float CONV_2D), the C runtime
(packed pixel bits, bit-exact under QEMU), and the TFLM int8 export's clear refusal."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from bnnprune_tf import data, models
from bnnprune_tf.errors import ConversionError
from bnnprune_tf.methods import cbnn
from conftest import require_tools
from converters import c_export, fold, lce, tflm
from test_fold import randomize_batchnorm

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def cbnn_model(channels=1, slices=(4, 5, 6, 7), seed=0):
    """vgg_small (width 1/8) reading ``slices`` through a binary first conv, random BN."""
    base = models.build("vgg_small", (28, 28, channels), width=0.125, seed=seed)
    return randomize_batchnorm(cbnn.keep_slices(cbnn.slice_input(base, seed=seed), slices), seed)


@pytest.fixture(scope="module")
def fashion():
    return data.load("fashion_mnist", seed=0, limit=300).pixels()


def test_lce_first_layer_is_binary_and_agrees_with_keras(fashion):
    model = cbnn_model()
    flatbuffer = lce.convert(model)
    ops = lce.inspect(flatbuffer).ops
    convs = sum(1 for l in model.layers if type(l).__name__ == "QuantConv2D")
    assert ops.get("LceBconv2d") == convs and "CONV_2D" not in ops
    assert "FLOOR_MOD" in ops            # the slicing runs inside the flatbuffer, on raw pixels
    x, y = fashion.arrays("test")
    check = lce.verify(model, flatbuffer, x, y)
    assert check.argmax_agreement == 1.0 and check.samples == len(x)


def test_fold_reads_pixels_and_equals_keras(fashion):
    model = cbnn_model(slices=(0, 3, 7))
    folded = fold.fold(model)
    assert isinstance(folded.layers[0], fold.BitSlices)
    x = fashion.arrays("test", limit=16)[0]
    codes = folded.quantize_input(x)
    np.testing.assert_array_equal(codes.astype(int) + 128, x)
    keras = fold.keras_logits(model, x)
    assert np.abs(keras - folded.logits(codes)).max() < 1e-4
    with pytest.raises(ConversionError, match="raw pixels"):
        folded.quantize_input(x / 255.0)


def _run(directory, board, tmp_path, kernel="opt"):
    target = "host" if board == "host" else "run"
    result = subprocess.run(["make", "-s", "-C", str(FIRMWARE), target, f"BOARD={board}",
                             f"MODEL={directory}", f"BUILD={tmp_path / board}", f"KERNEL={kernel}"],
                            capture_output=True, text=True, timeout=600)
    if board == "host":
        result = subprocess.run([str(tmp_path / board / "bnn")], capture_output=True, text=True,
                                timeout=60)
    return result


@pytest.mark.parametrize("channels, slices, boards", [
    (1, (4, 5, 6, 7), ["mps2-an386", "mps2-an500", "mps3-an547"]),   # M4, M7, M55
    (3, (0, 3, 4, 7), ["host", "mps2-an386"]),                        # RGB, bits not contiguous
])
def test_c_runtime_is_bit_exact_on_packed_pixel_bits(channels, slices, boards, fashion, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    model = cbnn_model(channels, slices)
    x = fashion.arrays("test", limit=3)[0]
    x = np.concatenate([np.roll(x, 5 * c, axis=2) for c in range(channels)], axis=-1)
    info = c_export.write(model, tmp_path / "model", samples=x)
    source = (tmp_path / "model" / "model_data.c").read_text()
    assert ".op = BNN_INPUT_SLICES" in source and "BNN_CONV_FIRST" not in source
    for board in boards:
        result = _run(tmp_path / "model", board, tmp_path)
        assert result.returncode == 0 and "3 passed, 0 failed" in result.stdout, \
            board + result.stdout + result.stderr
    assert info["input_bytes"] == 28 * 28 * channels


def test_profile_names_the_slicing_layer(fashion, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    from converters import firmware

    c_export.write(cbnn_model(), tmp_path / "model", samples=fashion.arrays("test", limit=1)[0])
    found = firmware.profile(tmp_path / "model", "mps2-an386", tmp_path / "profile")
    layers = found["layers"]
    assert [l["op"] for l in layers[:2]] == ["slices", "binary"]
    assert layers[0]["macs"] == 0 and layers[1]["macs"] > 0
    assert all(l["instructions"] > 0 for l in layers)
    assert sum(l["instructions"] for l in layers) <= found["total"]


def test_c_runtime_reference_kernels_agree(fashion, tmp_path):
    require_tools("gcc", "make")
    model = cbnn_model(1, (1, 6, 7))
    c_export.write(model, tmp_path / "model", samples=fashion.arrays("test", limit=3)[0])
    result = _run(tmp_path / "model", "host", tmp_path, kernel="ref")
    assert result.returncode == 0 and "3 passed, 0 failed" in result.stdout, result.stdout


def test_tflm_export_refuses_bit_slices_clearly():
    with pytest.raises(ConversionError, match="no exact int8 op that extracts bits"):
        tflm.to_tflm(cbnn_model())


def test_fold_refuses_a_real_valued_first_conv_on_slices():
    base = models.build("vgg_small", (28, 28, 1), width=0.125)
    with pytest.raises(ConversionError, match="input_quantizer='ste_sign'"):
        fold.fold(cbnn.slice_input(base, first="float"))
