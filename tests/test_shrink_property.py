"""Property test: on random graphs with residual adds (Keras ``Add`` and ``x + y``
TFOpLambdas with a prunable second operand), concatenations (also ``Concatenate([x, x])``
added to a conv), flattens, depthwise convs, PReLU and identity Lambdas, with every kind
of Larq kernel quantizer (sign, scaling, ternary, multi-bit) and random masks, the shrunk
model computes what the masked model computes (the issue asks for a few hundred cases)."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnprune_tf import masks, profile
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.shrink import shrink

L = tf.keras.layers
BIN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False,
           kernel_constraint="weight_clip")


@lq.utils.register_keras_custom_object
@lq.utils.set_precision(1)
def xnor_weight_scale(x):        # larq-zoo's XNOR-Net quantizer: mean |w| per filter
    x = tf.clip_by_value(x, -1, 1)
    return tf.reduce_mean(tf.abs(x), axis=[0, 1, 2], keepdims=True) * lq.quantizers.ste_sign(x)


# every kernel quantizer Larq ships, plus a zoo one; the first four look at the whole kernel
KERNEL_QUANTIZERS = [
    lambda: "magnitude_aware_sign",                                  # mean |w| per filter
    lambda: xnor_weight_scale,                                       # mean |w| per filter
    lambda: lq.quantizers.SteTern(ternary_weight_networks=True),     # mean |w| of the kernel
    lambda: lq.quantizers.DoReFa(k_bit=2, mode="weights"),           # max |tanh w|
    lambda: "ste_sign", lambda: "approx_sign", lambda: "swish_sign", lambda: "ste_heaviside",
    lambda: "ste_tern",
]


def bconv(x, c, k, draw, pad=None):
    if pad is None:
        pad = draw(st.sampled_from(["same", "valid"])) if x.shape[1] > k else "same"
    extra = {"pad_values": 1.0} if pad == "same" else {}
    quantizer = draw(st.sampled_from(KERNEL_QUANTIZERS))()
    conv = lq.layers.QuantConv2D(c, k, padding=pad, **extra, **{**BIN, "kernel_quantizer": quantizer})
    return L.BatchNormalization()(conv(x))


@st.composite
def random_model(draw):
    size = draw(st.sampled_from([5, 6, 8]))
    inputs = tf.keras.Input((size, size, draw(st.integers(1, 3))))
    width = lambda: draw(st.integers(1, 6))
    x = lq.layers.QuantConv2D(width(), 3, padding="same", pad_values=1.0,
                              kernel_quantizer="ste_sign", use_bias=draw(st.booleans()))(inputs)
    x = L.BatchNormalization()(x)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "residual", "op_add", "double_concat", "concat",
                                     "depthwise", "prelu", "lambda", "pool"]))
        if kind == "conv":
            x = bconv(x, width(), draw(st.sampled_from([1, 3])), draw)
        elif kind == "residual":
            y = bconv(x, x.shape[-1], 3, draw, "same")
            x = L.Add()([x, y] if draw(st.booleans()) else [y, x])
        elif kind == "op_add":        # a TFOpLambda; the conv is often the second operand
            y = bconv(x, x.shape[-1], 3, draw, "same")
            x = x + y if draw(st.booleans()) else tf.maximum(y, x)
        elif kind == "double_concat":  # one filter of x feeds channels i and C + i
            y = bconv(x, 2 * x.shape[-1], 3, draw, "same")
            x = L.Add()([L.Concatenate()([x, x]), y])
        elif kind == "prelu":
            x = L.PReLU(shared_axes=draw(st.sampled_from([[1, 2], None])))(x)
        elif kind == "lambda":
            x = L.Lambda(draw(st.sampled_from([lambda t: t, tf.nn.relu, lambda t: 0.5 * t])))(x)
        elif kind == "concat":
            a = bconv(x, width(), 1, draw)
            parts = [a, bconv(x, width(), 1, draw)] if a.shape[1] == x.shape[1] else [a]
            if a.shape[1] == x.shape[1] and draw(st.booleans()):
                parts.append(x)
            x = L.Concatenate()(parts) if len(parts) > 1 else a
        elif kind == "depthwise":
            x = lq.layers.QuantDepthwiseConv2D(3, padding="same", depthwise_quantizer="ste_sign",
                                               use_bias=False)(x)
            x = L.BatchNormalization()(x)
        elif x.shape[1] >= 4:
            x = L.MaxPool2D(2)(x)
    head = draw(st.sampled_from(["gap", "flatten", "conv"]))
    if head == "gap":
        x = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    elif head == "flatten":
        x = lq.layers.QuantDense(3, **BIN)(L.Flatten()(x))
    else:
        x = L.Flatten()(L.BatchNormalization()(
            lq.layers.QuantConv2D(3, x.shape[1], **BIN)(x)))
    return tf.keras.Model(inputs, x)


# Keras initializers draw their seeds from `random`; every weight is reset from the
# example's own numpy generator below, so the examples stay deterministic.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


def randomize(model, rng):
    """Every weight from ``rng``; BatchNorm with negative scales and real offsets."""
    for layer in model.layers:
        if not isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.normal(size=w.shape).astype("float32")
                               for w in layer.get_weights()])
        else:
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(size=gamma.shape) * 2, rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])


PROPERTY = settings(max_examples=45, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# two tests with different names draw different examples (90 in all) and run in
# parallel under pytest-xdist
@PROPERTY
@given(random_model(), st.integers(0, 2**31 - 1))
def test_shrunk_equals_masked(model, seed):
    check_shrunk_equals_masked(model, seed)


@PROPERTY
@given(random_model(), st.integers(0, 2**31 - 1))
def test_shrunk_equals_masked_more_graphs(model, seed):
    check_shrunk_equals_masked(model, seed)


def check_shrunk_equals_masked(model, seed):
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    masked = masks.prunable(model)
    graph = ChannelGraph(masked)
    keep = {}
    for g in graph.prunable_groups():
        k = rng.random(g.size) < 0.6
        k[rng.integers(g.size)] = True
        keep[g.id] = k
    graph.apply_masks(masked, keep)
    small = shrink(masked)
    # inputs on a 1/8 grid keep the float first layer's sums exact in float32
    x = (rng.integers(-8, 9, (3, *model.input_shape[1:])) / 8).astype("float32")
    want, got = masked(x).numpy(), small(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()
    for layer in small.layers:           # every producer really lost the pruned filters
        if layer.name in graph.outputs and isinstance(layer, (L.Conv2D, L.Dense)):
            kept = graph.layout_mask(graph.outputs[layer.name], keep).sum()
            assert layer.output.shape[-1] == kept
    assert profile.profile(small).to_dict()["totals"] == profile.profile(masked).to_dict()["totals"]
