"""converters.lint: every rule has a model that triggers it and one that does not.

Two tests also convert and check that lint's prediction matches what LCE made.
"""

import bnnprune_tf  # noqa: F401
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import models
from bnnprune_tf.errors import ConversionError
from bnnprune_tf.layer_facts import is_sign
from converters import lce
from converters.lint import binary_conv_layers, binary_filter_problem, lint

L = tf.keras.layers
BIN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
           kernel_constraint="weight_clip", use_bias=False)


def bconv(filters=32, name=None, **kw):
    return lq.layers.QuantConv2D(filters, 3, padding="same", pad_values=1.0, name=name,
                                 **{**BIN, **kw})


def net(*body, channels=32, shape=(8, 8)):
    """Input -> float stem conv -> BN -> body layers -> global pooling."""
    inputs = tf.keras.Input((*shape, 1))
    x = L.BatchNormalization()(L.Conv2D(channels, 3, padding="same", name="stem")(inputs))
    for layer in body:
        x = layer(x)
    return tf.keras.Model(inputs, L.GlobalAveragePooling2D()(x))


def rules(model, layer=None):
    return {f.rule for f in lint(model) if layer is None or f.layer == layer}


def test_clean_binary_net_has_no_findings():
    model = net(bconv(name="a"), L.BatchNormalization(), bconv(64, name="b"),
                L.BatchNormalization())
    assert lint(model) == []
    assert binary_conv_layers(model) == ["a", "b"]


def test_quant_dense():
    dense = tf.keras.Sequential([tf.keras.Input((64,)), lq.layers.QuantDense(16, **BIN,
                                                                             name="fc")])
    found = lint(dense)
    assert [(f.layer, f.rule, f.severity) for f in found] == [("fc", "quant-dense", "float")]
    assert "QuantConv2D" in found[0].fix
    float_dense = tf.keras.Sequential([tf.keras.Input((64,)), lq.layers.QuantDense(16)])
    assert lint(float_dense) == []


def test_quant_depthwise():
    model = net(lq.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
                                               depthwise_quantizer="ste_sign", name="dw"))
    assert rules(model, "dw") == {"quant-depthwise"}
    assert lint(net(lq.layers.QuantDepthwiseConv2D(3))) == []


def test_float_input_is_info_for_the_stem_and_float_elsewhere():
    stem = lq.layers.QuantConv2D(32, 3, kernel_quantizer="ste_sign", name="first")
    inner = lq.layers.QuantConv2D(32, 3, kernel_quantizer="ste_sign", name="inner")
    inputs = tf.keras.Input((8, 8, 1))
    model = tf.keras.Model(inputs, inner(L.BatchNormalization()(stem(inputs))))
    found = {f.layer: f for f in lint(model)}
    assert found["first"].rule == found["inner"].rule == "float-input"
    assert found["first"].severity == "info" and found["inner"].severity == "float"
    assert "input_quantizer" in found["inner"].fix
    assert binary_conv_layers(model) == []


def test_input_quantizer_not_sign_like():
    model = net(bconv(name="heavi", input_quantizer="ste_heaviside"),
                bconv(name="dorefa", input_quantizer=lq.quantizers.DoReFa(k_bit=2)),
                bconv(name="ok", input_quantizer="approx_sign"))
    assert rules(model, "heavi") == rules(model, "dorefa") == {"input-quantizer"}
    assert rules(model, "ok") == set()


def test_sign_like_probe():
    assert is_sign(lq.quantizers.SteSign(clip_value=1.25))
    assert is_sign(lambda x: tf.where(x >= 0, 1.0, -1.0))
    assert not is_sign(lq.quantizers.SteTern())
    assert not is_sign(None)


def plain_sign(w):
    return tf.sign(w)                   # unlike larq's sign, 0 stays 0


def test_zero_weights():
    model = net(bconv(name="masked", kernel_quantizer=plain_sign))
    layer = model.get_layer("masked")
    kernel = layer.kernel.numpy()
    kernel[..., 3] = 0.0
    layer.kernel.assign(kernel)
    found = [f for f in lint(model) if f.layer == "masked"]
    assert [f.rule for f in found] == ["zero-weights"]
    assert "[3]" in found[0].problem        # names the zeroed output channel
    layer.kernel.assign(np.where(kernel == 0, 0.1, kernel))
    assert rules(model, "masked") == set()


def test_non_binary_kernel():
    model = net(bconv(name="twobit", kernel_quantizer=lq.quantizers.DoReFa(k_bit=2,
                                                                           mode="weights")),
                bconv(name="floatw", kernel_quantizer=None),
                bconv(name="ternary", kernel_quantizer="ste_tern"))
    assert rules(model, "twobit") == rules(model, "floatw") == {"non-binary-kernel"}
    assert rules(model, "ternary") == {"zero-weights"}       # ternary zeros are real zeros
    assert rules(net(bconv(name="mag", kernel_quantizer="magnitude_aware_sign")), "mag") == set()


def test_binary_filter_problem_matches_lce_tolerance():
    w = np.sign(np.random.default_rng(0).normal(size=(3, 3, 4, 2))).astype(np.float32)
    assert binary_filter_problem(w) is None
    assert binary_filter_problem(w * np.array([0.5, 2.0], np.float32)) is None   # per-channel
    assert binary_filter_problem(w * 1.004) is None                              # within 0.005
    skewed = w.copy()
    skewed[1, 1, 1, 0] *= 1.01
    assert "not +-1" in binary_filter_problem(skewed)


def test_same_zero_padding():
    model = net(lq.layers.QuantConv2D(32, 3, padding="same", name="zero", **BIN),
                bconv(name="one"))
    assert rules(model, "zero") == {"same-zero-padding"}
    assert rules(model, "one") == set()


def test_bn_before_activation():
    bad = net(bconv(name="c"), L.BatchNormalization(), L.ReLU(), bconv(name="d"))
    assert rules(bad, "c") == {"bn-before-activation"}
    good = net(bconv(name="c", activation="relu"), L.BatchNormalization(), bconv(name="d"))
    assert rules(good, "c") == set()
    good2 = net(bconv(name="c"), L.ReLU(), L.BatchNormalization(), bconv(name="d"))
    assert rules(good2, "c") == set()


def test_packing_words():
    model = net(bconv(48, name="a"), L.BatchNormalization(), bconv(name="b"), channels=24)
    found = {f.layer: f for f in lint(model)}
    assert found["a"].rule == "packing-words" and "8 bits unused" in found["a"].problem
    assert found["b"].rule == "packing-words" and "16 bits unused" in found["b"].problem
    assert "32 or 64" in found["b"].fix
    assert lint(net(bconv(64), L.BatchNormalization(), bconv(), channels=32)) == []


def test_reference_models_are_lint_clean_except_by_design():
    model = models.build("mnist_bnn", (28, 28, 1), 10, width=1.0)
    assert [(f.layer, f.rule, f.severity) for f in lint(model)] == [
        ("conv_first", "float-input", "info")]


def test_lint_rejects_non_models():
    with pytest.raises(ConversionError, match="tf.keras.Model"):
        lint("model.keras")


def test_lint_predictions_match_the_converter():
    """Layers lint calls 'float' do not become LceBconv2d; the rest do."""
    model = net(bconv(name="ok"), L.BatchNormalization(),
                bconv(name="floatw", kernel_quantizer=None), L.BatchNormalization(),
                bconv(name="heavi", input_quantizer="ste_heaviside"), L.BatchNormalization(),
                bconv(name="ok2"))
    expected = binary_conv_layers(model)
    assert expected == ["ok", "ok2"]
    ops = lce.inspect(lce.convert(model)).ops
    assert ops["LceBconv2d"] == 2
    assert ops["CONV_2D"] == 3          # stem + the two layers lint flagged


def test_same_zero_and_bn_relu_leave_float_output_in_lce():
    model = net(bconv(name="c"), L.BatchNormalization(), L.ReLU(), bconv(name="d"),
                L.BatchNormalization(),
                lq.layers.QuantConv2D(32, 3, padding="same", name="zero", **BIN),
                L.BatchNormalization(), bconv(name="e"))
    assert {f.rule for f in lint(model)} == {"bn-before-activation", "same-zero-padding"}
    info = lce.inspect(lce.convert(model))
    outputs = [c["output"] for c in info.binary_convs]
    # c: float (BN->ReLU), d: bit-packed, zero: float (same-zero), e: float (model output)
    assert outputs == ["float32", "bitpacked", "float32", "float32"]
    assert info.ops["RELU"] == 1


def test_bn_threshold_tie_only_where_a_sign_reads_a_sum_the_conv_produces():
    model = net(bconv(name="a"), L.BatchNormalization(name="a_bn"), L.MaxPool2D(),
                bconv(name="b"), L.BatchNormalization(name="b_bn"))
    for bn in ("a_bn", "b_bn"):
        mean = np.full(32, -22.3, np.float32)   # t = mean - beta * sqrt(var + eps) / gamma
        mean[5] = -22.0 + 2e-6                  # on -22 (288 taps: even sums) within float32
        mean[6] = -21.0                         # odd: no sum of 288 +-1 products is odd
        model.get_layer(bn).moving_mean.assign(mean)
    found = [f for f in lint(model) if f.rule == "bn-threshold-tie"]
    # b_bn feeds the (float) pooling at the end: its ties decide nothing
    assert [(f.layer, f.severity) for f in found] == [("a", "tie")]
    assert "a_bn channel 5:" in found[0].problem and "from -22," in found[0].problem
    assert binary_conv_layers(model) == ["a", "b"]          # a tie is no float fallback
    mean[5] = -22.0 + 1e-3                                  # off the integer: settled
    model.get_layer("a_bn").moving_mean.assign(mean)
    assert "bn-threshold-tie" not in rules(model)
