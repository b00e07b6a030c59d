"""converters.lce and converters.flatbuffer: convert, verify against Keras, inspect;
the convert/benchmark pipeline stages and `bnnprune convert`."""

import json

import bnnprune_tf  # noqa: F401
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import files, masks, models, prune, thresholds
from bnnprune_tf.errors import ConversionError
from converters import flatbuffer, lce


@pytest.fixture(scope="module")
def small():
    """mnist_bnn at width 0.25 (8-16-32 channels), converted once."""
    model = models.build("mnist_bnn", (28, 28, 1), 10, width=0.25)
    return model, lce.convert(model)


def test_convert_makes_every_binary_conv_an_lce_bconv(small):
    model, fb = small
    info = lce.inspect(fb)
    assert info.ops["LceBconv2d"] == 3 and info.ops["CONV_2D"] == 1
    assert "FULLY_CONNECTED" not in info.ops and "LceDequantize" not in info.ops
    assert info.total_bytes == len(fb)
    # bit-packed filters hold Cout * kh * kw * ceil(Cin / 32) int32 words each
    expected = 0
    for layer in model.layers:
        if isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None:
            kh, kw, cin, cout = layer.kernel.shape
            expected += cout * kh * kw * -(-cin // 32) * 4
    assert info.bitpacked_weight_bytes == expected
    stem = model.get_layer("conv_first").kernel.shape
    assert info.float_weight_bytes >= 4 * int(np.prod(stem))
    assert [c["output"] for c in info.binary_convs] == ["bitpacked", "bitpacked", "float32"]
    assert info.binary_convs[0]["channels_in"] == 8 and info.binary_convs[0]["pad_values"] == 1
    assert info.largest_activation_bytes == 28 * 28 * 8 * 4      # the stem's float output


def test_convert_makes_the_flatbuffer_of_lce_convert_keras_model(small):
    """The lean SavedModel changes the time, not the bytes: one input and output, and two
    of each (the signature keeps Keras' input and output names and their order)."""
    import larq_compute_engine

    model, fb = small
    assert fb == larq_compute_engine.convert_keras_model(
        thresholds.centered(prune.strip_pruning(model)))
    a, b = tf.keras.Input((8, 8, 3), name="a"), tf.keras.Input((8, 8, 3), name="b")
    x = lq.layers.QuantConv2D(32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False)(a)
    y = tf.keras.layers.Flatten()(tf.keras.layers.Concatenate()([x, x]))
    two = tf.keras.Model([a, b], [tf.keras.layers.Dense(2, name="left")(y),
                                  tf.keras.layers.Dense(3, name="right")(
                                      tf.keras.layers.Flatten()(b))])
    assert lce.convert(two) == larq_compute_engine.convert_keras_model(two)


def test_flatbuffer_reader_sees_tensors_and_options(small):
    _, fb = small
    graph = flatbuffer.read(fb)
    assert graph.subgraphs == 1 and graph.file_bytes == len(fb)
    assert graph.tensors[graph.inputs[0]].shape == (1, 28, 28, 1)
    assert graph.tensors[graph.outputs[0]].shape == (1, 10)
    bconv = next(op for op in graph.operators if op.type == "LceBconv2d")
    assert set(bconv.options) >= {"channels_in", "padding", "pad_values", "stride_height"}
    assert graph.tensors[bconv.inputs[1]].dtype == "INT32"        # bit-packed filter


def test_float_dense_weights_are_counted_as_float():
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Flatten()(inputs)
    x = lq.layers.QuantDense(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                             use_bias=False)(x)
    info = lce.inspect(lce.convert(tf.keras.Model(inputs, x)))
    assert info.ops["FULLY_CONNECTED"] == 1 and "LceBconv2d" not in info.ops
    assert info.bitpacked_weight_bytes == 0
    assert info.float_weight_bytes >= 64 * 16 * 4


def test_verify_agrees_with_keras(small, mnist_small):
    model, fb = small
    x, y = mnist_small.arrays("test", limit=64)
    result = lce.verify(model, fb, x, y)
    # an untrained BNN has integer-valued logits that tie exactly; rounding breaks ties
    assert result.samples == 64
    assert result.argmax_agreement * 64 + result.argmax_ties == 64
    assert result.max_abs_diff <= 1e-3
    keras_acc = float((model.predict(x, verbose=0).argmax(1) == y).mean())
    assert result.keras_accuracy == pytest.approx(keras_acc)
    assert abs(result.lce_accuracy - keras_acc) <= result.argmax_ties / 64
    indirect = lce.verify(model, fb, x[:8], kernel="indirect_bgemm")
    assert indirect.max_abs_diff <= 1e-3 and indirect.keras_accuracy is None


def test_verify_names_the_first_differing_sample(small, mnist_small):
    model, fb = small
    other = models.build("mnist_bnn", (28, 28, 1), 10, width=0.25, seed=1)   # other weights
    x, _ = mnist_small.arrays("test", limit=32)
    with pytest.raises(ConversionError, match=r"First differing sample: \d+ \(Keras argmax"):
        lce.verify(other, fb, x)


def test_verify_rejects_bad_inputs_before_running(small):
    model, fb = small
    with pytest.raises(ConversionError, match=r"expects \(N, 28, 28, 1\)"):
        lce.verify(model, fb, np.zeros((4, 28, 28), np.float32))
    with pytest.raises(ConversionError, match="3 labels for 4 samples"):
        lce.verify(model, fb, np.zeros((4, 28, 28, 1), np.float32), [0, 1, 2])
    with pytest.raises(ConversionError, match="not a TFLite flatbuffer"):
        lce.verify(model, b"\x00" * 64, np.zeros((1, 28, 28, 1), np.float32))


def test_inspect_and_convert_reject_wrong_things():
    with pytest.raises(ConversionError, match="not a TFLite flatbuffer"):
        lce.inspect(b"PK\x03\x04 a zip file, not a model")
    with pytest.raises(ConversionError, match="tf.keras.Model"):
        lce.convert("model.keras")
    with pytest.raises(ConversionError, match="unknown target"):
        lce.convert(tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)]),
                    target="x86")


def test_convert_strips_bnnprune_masks():
    """A masked model converts to the shrunk network and LCE matches the masked Keras model."""
    masked = prune.prune_filters(models.build("mnist_bnn", (28, 28, 1), 10, width=0.5),
                                 ratio=0.5)
    assert any(masks.is_masked(layer) for layer in masked.layers)
    fb = lce.convert(masked)
    info = lce.inspect(fb)
    assert info.ops["LceBconv2d"] == 3 and "LceDequantize" not in info.ops
    full_cin = [layer.kernel.shape[2] for layer in masked.layers
                if isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None]
    packed_cin = [c["channels_in"] for c in info.binary_convs]
    assert sum(packed_cin) < sum(full_cin)                   # channels really removed
    shrunk = prune.strip_pruning(masked)
    assert packed_cin == [layer.kernel.shape[2] for layer in shrunk.layers
                          if isinstance(layer, lq.layers.QuantConv2D)
                          and layer.input_quantizer is not None]
    x = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32)
    check = lce.verify(masked, fb, x)
    assert check.argmax_agreement * 16 + check.argmax_ties == 16


def test_convert_and_benchmark_stages_in_a_recipe(tmp_path):
    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    recipe = parse_recipe({
        "name": "tiny_lce", "seed": 0,
        "data": {"name": "mnist5k", "limit": 300, "batch_size": 32},
        "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", {"convert": {"split": "test"}}, {"benchmark": {"runs": 5}},
                   "report"]})
    run_dir = run_recipe(recipe, tmp_path, log=lambda m: None)
    assert flatbuffer.read((run_dir / "model.tflite").read_bytes()).file_bytes > 0
    report = json.loads((run_dir / "report.json").read_text())
    convert, benchmark = report["stages"][1], report["stages"][2]
    assert convert["outputs"] == {"tflite": "model.tflite"}
    assert convert["metrics"]["binary_convs"] == {"expected": 3, "LceBconv2d": 3}
    check = convert["metrics"]["verify"]
    assert check["argmax_agreement"] * check["samples"] + check["argmax_ties"] == check["samples"]
    assert set(benchmark["metrics"]) == {"model/default", "model/indirect_bgemm", "ratios"}
    md = (run_dir / "report.md").read_text()
    assert "| LceBconv2d | 3 |" in md and "| model | host | indirect_bgemm | 1 | 5 |" in md


def test_cli_convert_lints_inspects_and_verifies(tmp_path, capsys):
    from pipelines import cli

    path = files.save_model(models.build("mnist_bnn", (28, 28, 1), 10, width=0.25),
                            tmp_path / "m.keras")
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(path), "--out", str(out), "--data", "mnist5k",
                     "--limit", "16"]) == 0
    text = capsys.readouterr().out
    assert "float-input" in text and "| LceBconv2d | 3 |" in text and "| Keras vs LCE | 16 |" in text
    assert flatbuffer.read(out.read_bytes()).file_bytes == out.stat().st_size
    assert cli.main(["convert", str(tmp_path / "missing.keras")]) == 2
    assert "missing.keras not found" in capsys.readouterr().err


def _residual_bnn():
    """Stem, then three blocks ``x + BN(bconv(x))``: every sign reads a float sum."""
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization(name="bn0")(
        tf.keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(inputs))
    for i in (1, 2, 3):
        y = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                                  input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                  kernel_constraint="weight_clip", name=f"conv{i}")(x)
        x = tf.keras.layers.Add(name=f"add{i}")(
            [x, tf.keras.layers.BatchNormalization(name=f"bn{i}")(y)])
    out = tf.keras.layers.Dense(4)(tf.keras.layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inputs, out)


def test_divergence_names_the_first_binary_conv_whose_input_signs_differ(monkeypatch):
    model = _residual_bnn()
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    rows = lce.divergence(model, x)
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3"]
    for row in rows:          # the same model in LCE: rounding, no flipped sign
        assert row["sign_flips"] == 0 and row["max_abs_diff"] <= 1e-5 * row["scale"], row
        assert row["largest_flipped"] is None

    convert = lce.convert

    def departing(model):     # an "LCE" that shifts channel 0 of bn1 far below 0
        if "bn1" in [la.name for la in model.layers]:
            clone = tf.keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            model = clone
            beta = model.get_layer("bn1").beta
            beta.assign(beta - np.eye(1, 32, dtype=np.float32)[0] * 1e4)
        return convert(model)

    monkeypatch.setattr(lce, "convert", departing)
    rows = lce.divergence(model, x)
    assert [r["layer"] for r in rows] == ["conv1", "conv2"]      # stops at the first flip
    assert rows[0]["sign_flips"] == 0 and rows[1]["sign_flips"] > 0
    assert rows[1]["max_abs_diff"] >= 1e4 - 1e-3 * rows[1]["scale"]
    assert 0 < rows[1]["largest_flipped"] <= rows[1]["scale"]
    rows = lce.divergence(model, x, stop_at_first_flip=False)
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3"]
    assert rows[2]["sign_flips"] > 0
