"""Exact int8 TFLM export: bit-exact in tflite-micro and tf.lite (reference kernels)."""

import subprocess

import numpy as np
import pytest

from bnnprune_tf import data, models, training
from bnnprune_tf.errors import ConversionError
from converters import fold, tflm
from test_fold import irregular_bnn, randomize_batchnorm


@pytest.fixture(scope="module")
def mnist5k():
    return data.load("mnist5k", seed=0)


@pytest.fixture(scope="module")
def trained(mnist5k):
    model = models.build("mnist_bnn", mnist5k.input_shape, mnist5k.num_classes, width=0.25,
                         seed=0)
    training.train(model, mnist5k, epochs=2, learning_rate=1e-2)      # cosine, deterministic
    return model


def test_tflm_output_equals_numpy_reference_bit_for_bit(mnist_small):
    model = randomize_batchnorm(models.build("mnist_bnn", (28, 28, 1), 10, width=0.2))
    x, _ = mnist_small.arrays("test", limit=40)
    flatbuffer = tflm.to_tflm(model, output="int8", calibration=x)
    assert tflm.ops(flatbuffer) == ["PADV2", "CONV_2D", "MAX_POOL_2D", "RESHAPE"]
    folded = fold.fold(model)
    codes = folded.quantize_input(x)
    got, arena = tflm.run_tflm(flatbuffer, codes)
    quant = tflm.output_quantization(folded, x)
    expected = tflm.reference(folded, quant, codes, "int8")
    assert got.dtype == np.int8 and got.shape == (40, 10)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(tflm.run_tflite(flatbuffer, codes), expected)
    assert len(np.unique(expected)) > 10          # real logits, not saturated constants
    assert 0 < arena < 10 * len(flatbuffer)


@pytest.mark.parametrize("name,output", [("mnist_bnn", "float"), ("binary_mlp", "float"),
                                         ("binary_mlp", "int8")])
def test_random_reference_models_verify(name, output, mnist_small):
    model = randomize_batchnorm(models.build(name, (28, 28, 1), 10, width=0.2), seed=4)
    x, _ = mnist_small.arrays("test", limit=64)
    flatbuffer = tflm.to_tflm(model, output=output, calibration=x)
    report = tflm.verify_tflm(model, flatbuffer, x)
    assert report["bit_exact"] and report["tflite_bit_exact"]
    assert report["integer_argmax_agreement"] == 1.0
    assert report["integer_logit_max_error"] < 1e-4
    assert report["argmax_agreement"] >= 0.9
    assert (report["ops"][-1] == "DEQUANTIZE") == (output == "float")


def test_shrunk_like_model_with_odd_channels_stride_zero_padding_and_ternary_kernel():
    model = irregular_bnn(seed=5)
    pixels = np.random.default_rng(6).integers(0, 256, (32, 28, 28, 1))
    x = (pixels / 127.5 - 1).astype(np.float32)      # on the pixel grid, like real images
    flatbuffer = tflm.to_tflm(model)           # no calibration: worst-case output scale
    report = tflm.verify_tflm(model, flatbuffer, x)
    assert report["bit_exact"] and report["tflite_bit_exact"]
    assert report["integer_argmax_agreement"] == 1.0


def test_trained_model_matches_keras_on_test_images(trained, mnist5k):
    x, y = mnist5k.arrays("test", limit=300)
    flatbuffer = tflm.to_tflm(trained, output="float", calibration=x)
    report = tflm.verify_tflm(trained, flatbuffer, x)
    assert report["bit_exact"] and report["tflite_bit_exact"]
    assert report["integer_argmax_agreement"] == 1.0
    assert report["argmax_agreement"] >= 0.97
    folded = fold.fold(trained)
    logits, _ = tflm.run_tflm(flatbuffer, folded.quantize_input(x))
    keras_accuracy = np.mean(fold.keras_logits(trained, x).argmax(1) == y)
    assert keras_accuracy > 0.8                       # it learned something
    assert abs(np.mean(logits.argmax(1) == y) - keras_accuracy) <= 0.02


def test_unsupported_layer_and_bad_output_are_clear_errors():
    import tensorflow as tf

    inputs = tf.keras.Input((28, 28, 1))
    x = models.build("mnist_bnn", (28, 28, 1), 10, width=0.2)(inputs)
    x = tf.keras.layers.Dense(10, name="float_head")(x)
    with pytest.raises(ConversionError, match="mnist_bnn|float_head"):
        tflm.to_tflm(tf.keras.Model(inputs, x))
    flat = tf.keras.layers.Flatten()(inputs)
    dense = tf.keras.layers.Dense(10, name="float_head")(flat)
    with pytest.raises(ConversionError, match="float_head"):
        tflm.to_tflm(tf.keras.Model(inputs, dense))
    with pytest.raises(ConversionError, match="output"):
        tflm.to_tflm(models.build("binary_mlp", (28, 28, 1), 10, width=0.1), output="int16")


def test_c_source_compiles_and_holds_the_flatbuffer(tmp_path, mnist_small):
    model = models.build("binary_mlp", (28, 28, 1), 10, width=0.1)
    x, _ = mnist_small.arrays("test", limit=40)
    report = tflm.write_c_source(model, x, tmp_path, tests=3)
    header = (tmp_path / "model_data.h").read_text()
    arena = (report["arena_bytes"] * 5 // 4 + 1023) // 1024 * 1024
    assert f"constexpr int kTensorArenaSize = {arena};" in header
    assert "#define BNNPRUNE_USES_DEQUANTIZE 1" in header and "kNumTests = 3;" in header
    folded = fold.fold(model)
    codes = folded.quantize_input(x[:3])
    expected = tflm.reference(folded, tflm.output_quantization(folded, x), codes, "int8")
    (tmp_path / "dump.cc").write_text(
        '#include <cstdio>\n#include "model_data.h"\nint main() {\n'
        '  for (unsigned i = 0; i < g_model_len; ++i) std::fputc(g_model[i], stdout);\n'
        '  for (int t = 0; t < kNumTests; ++t) for (int c = 0; c < kNumClasses; ++c)\n'
        '    std::fprintf(stderr, "%d %d ", g_test_logits[t][c], g_test_inputs[t][c]);\n'
        '  return (unsigned long)g_model % 16;\n}\n')
    exe = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Werror", "-o", str(exe),
                    str(tmp_path / "dump.cc"), str(tmp_path / "model_data.cc")], check=True)
    out = subprocess.run([str(exe)], capture_output=True)
    assert out.returncode == 0                                   # 16-byte aligned
    assert out.stdout == (tmp_path / "model.tflite").read_bytes()
    printed = np.array(out.stderr.split(), int).reshape(3, 10, 2)
    np.testing.assert_array_equal(printed[..., 0], expected)
    np.testing.assert_array_equal(printed[..., 1], codes.reshape(3, -1)[:, :10])


def test_convert_stage_and_cli_write_the_tflm_export(tmp_path, mnist_small):
    from types import SimpleNamespace

    from pipelines import cli, stages
    from pipelines.stages import deploy as deploy_stages

    model = models.build("binary_mlp", (28, 28, 1), 10, width=0.1)
    run = SimpleNamespace(dataset=mnist_small, dir=tmp_path, load_model=lambda: model)
    params = deploy_stages.ConvertParams(target="tflm", split="val")
    result = stages.STAGES["convert"].fn(run, params)
    assert result["metrics"]["tflm"]["bit_exact"] is True
    assert (tmp_path / result["outputs"]["tflite"]).read_bytes()[4:8] == b"TFL3"
    assert "kTensorArenaSize" in (tmp_path / "tflm/model_data.h").read_text()

    model.save(tmp_path / "m.keras")
    out = tmp_path / "cli" / "bnn.tflite"
    assert cli.main(["convert", str(tmp_path / "m.keras"), "--to", "tflm", "--out", str(out)]) == 0
    assert tflm.ops(out.read_bytes()) == ["RESHAPE", "CONV_2D", "DEQUANTIZE"]
    assert cli.main(["convert", str(tmp_path / "m.keras"), "--to", "tflm-c",
                     "--out", str(out)]) == 2          # needs --data: a clear error, exit 2
