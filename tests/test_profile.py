import io
import contextlib

import larq as lq
import pytest
import tensorflow as tf
from larq.models import ModelProfile

from bnnprune_tf import models, profile
from bnnprune_tf.errors import ModelError

SHAPES = {"mnist_bnn": (28, 28, 1), "binary_mlp": (28, 28, 1)}


@pytest.mark.parametrize("name", models.names())
def test_totals_equal_larq_summary(name):
    model = models.build(name, SHAPES.get(name, (32, 32, 3)), width=0.25)
    ours = profile.profile(model)
    larq = ModelProfile(model)
    assert ours.binary_macs == larq.op_count("mac", 1) > 0
    assert ours.float_macs == larq.op_count("mac", 32) > 0
    assert ours.binary_macs + ours.float_macs == larq.op_count("mac")
    assert ours.binary_params == larq.weight_count(1)
    assert ours.float_params == larq.weight_count(32)
    assert ours.memory_bits == larq.memory
    # and the number larq.models.summary prints
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        lq.models.summary(model)
    printed = text.getvalue()
    total = lq.models._number_as_readable_str(ours.binary_macs + ours.float_macs)
    ratio = ours.binary_macs / (ours.binary_macs + ours.float_macs)
    assert f"Number of MACs                    {total}" in printed
    assert f"Ratio of MACs that are binarized  {ratio:.4f}" in printed


def test_hand_counted_model():
    inputs = tf.keras.Input((6, 6, 4))
    x = lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", use_bias=False,
                              name="first")(inputs)                     # float input
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = lq.layers.QuantConv2D(5, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              name="binary")(x)                          # with bias
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(3, name="head")(x)
    cost = profile.profile(tf.keras.Model(inputs, x))
    first, bn, binary, head = (cost.layer(n) for n in ("first", "bn", "binary", "head"))
    assert (first.float_macs, first.binary_macs, first.binary_params) == (4 * 4 * 3 * 3 * 4 * 8, 0, 288)
    assert first.memory_bits == 288
    assert (bn.float_params, bn.memory_bits) == (16, 16 * 32)   # 4 x 8, two fused pairs
    assert (binary.binary_macs, binary.binary_params, binary.float_params) == (2 * 2 * 3 * 3 * 8 * 5, 360, 5)
    assert binary.memory_bits == 360 + 5 * 32
    assert (head.float_macs, head.float_params) == (20 * 3, 63)
    assert cost.binary_macs == 1440 and cost.float_macs == 4608 + 60
    assert cost.memory_bytes == cost.memory_bits / 8
    md = cost.to_markdown()
    assert "| binary | QuantConv2D | (2, 2, 5) | 1,440 | 0 | 360 | 5 |" in md
    assert md.splitlines()[-1].startswith("| **total** |  |  | 1,440 | 4,668 |")
    assert cost.to_dict()["totals"]["binary_macs"] == 1440


def test_nested_models_are_flattened():
    inner = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    outer = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), inner])
    assert profile.profile(outer).binary_macs == profile.profile(inner).binary_macs
    assert profile.profile(outer).layers[1].name == "mnist_bnn/conv_first"


def test_bad_models():
    plain = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ModelError, match="has no Larq quantized layer .* it is not a BNN"):
        profile.profile(plain)
    assert profile.profile(plain, require_quantized=False).float_macs == 8
    with pytest.raises(ModelError, match="needs a tf.keras \\(Keras 2\\) model, got builtins.str"):
        profile.profile("model.keras")
    unbuilt = tf.keras.Sequential([lq.layers.QuantDense(2)])
    with pytest.raises(ModelError, match="is not built: call model.build"):
        profile.profile(unbuilt)


def test_ternary_weights_are_not_float_macs():
    inputs = tf.keras.Input((4, 4, 8))
    x = lq.layers.QuantConv2D(6, 3, input_quantizer="ste_sign", kernel_quantizer="ste_tern",
                              use_bias=False, name="tern")(inputs)
    cost = profile.profile(tf.keras.Model(inputs, x)).layer("tern")
    n = 2 * 2 * 3 * 3 * 8 * 6
    assert cost.float_macs == 0                 # was counted as n float MACs
    assert (cost.ternary_macs, cost.float_macs, cost.binary_macs) == (n, 0, 0)
    assert (cost.ternary_params, cost.float_params, cost.memory_bits) == (3 * 3 * 8 * 6, 0, 2 * 432)
