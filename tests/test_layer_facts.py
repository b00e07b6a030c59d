import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import layer_facts, masks
from bnnprune_tf.layer_facts import WeightDomain

L = tf.keras.layers


def xnor_weight_scale(x):          # larq-zoo's XNOR-Net kernel quantizer, without precision
    return tf.reduce_mean(tf.abs(x), axis=[0, 1, 2], keepdims=True) * lq.quantizers.ste_sign(x)


class AffineQuantizer:             # how a coming SBNN quantizer declares its domain
    weight_domain = "affine"

    def __call__(self, x):
        return tf.where(x >= 0, 0.7, -0.2)


@pytest.mark.parametrize("quantizer, domain, elementwise", [
    ("ste_sign", WeightDomain.BINARY, True), ("approx_sign", WeightDomain.BINARY, True),
    ("swish_sign", WeightDomain.BINARY, True),
    ("magnitude_aware_sign", WeightDomain.BINARY, False),       # mean |w| per filter
    (xnor_weight_scale, WeightDomain.BINARY, False),
    (lq.quantizers.DoReFa(1, "weights"), WeightDomain.BINARY, True),
    ("ste_tern", WeightDomain.TERNARY, True),
    (lq.quantizers.SteTern(ternary_weight_networks=True), WeightDomain.TERNARY, False),
    ("ste_heaviside", WeightDomain.AFFINE, True), (AffineQuantizer(), WeightDomain.AFFINE, True),
    (lq.quantizers.DoReFa(2, "weights"), WeightDomain.FLOAT, False),   # max |tanh w|
    (None, WeightDomain.FLOAT, True),
])
def test_weight_domain_of_every_larq_quantizer(quantizer, domain, elementwise):
    layer = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer=quantizer)
    layer.build((None, 5, 5, 3))
    assert layer_facts.weight_domain(layer) is domain
    assert layer_facts.is_binary(layer) == (domain is WeightDomain.BINARY)
    assert layer_facts.is_binary_conv(layer) == (domain is WeightDomain.BINARY)
    assert layer_facts.is_elementwise(layer_facts.kernel_quantizer(layer)) == elementwise
    kernel = layer_facts.quantized_kernel(layer).reshape(-1, 4)
    distinct = max(len(np.unique(channel)) for channel in kernel.T)   # per output channel
    assert distinct == {"binary": 2, "ternary": 3, "affine": 2}.get(domain.value, distinct)


def test_weight_masks_make_a_binary_layer_ternary():
    inputs = tf.keras.Input((5, 5, 3))
    model = tf.keras.Model(inputs, lq.layers.QuantConv2D(
        4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="c")(inputs))
    layer = masks.prunable(model).get_layer("c")
    assert layer_facts.weight_domain(layer) is WeightDomain.BINARY
    keep = np.ones((3, 3, 3, 4), "float32")
    keep[0, 0, 0, 0] = 0
    layer.set_masks(weights=keep)
    assert layer_facts.weight_domain(layer) is WeightDomain.TERNARY
    assert (layer_facts.quantized_kernel(layer) == 0).sum() == 1


def test_latent_kernel_of_masked_plain_larq_keras_and_depthwise():
    inputs = tf.keras.Input((5, 5, 3))
    x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="q")(inputs)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    model = tf.keras.Model(inputs, L.Dense(2, name="d")(L.Flatten()(x)))
    masked = masks.prunable(model)
    for name in ("q", "dw", "d"):
        plain, with_masks = model.get_layer(name), masked.get_layer(name)
        latent = layer_facts.latent_kernel(plain)
        assert isinstance(latent, tf.Variable) and not hasattr(latent, "latent_variable")
        assert layer_facts.latent_kernel(with_masks) is with_masks.latent_kernel
        np.testing.assert_array_equal(latent.numpy(), with_masks.latent_kernel.numpy())
    assert layer_facts.kernel_attrs(model.get_layer("dw"))[0] == "depthwise_kernel"


def test_precision_binary_input_and_binary_kernel_layers():
    inputs = tf.keras.Input((6, 6, 3))
    x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="first")(inputs)
    x = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_tern",
                              name="tern")(x)
    x = lq.layers.QuantConv2D(4, 1, input_quantizer=lq.quantizers.DoReFa(2),
                              kernel_quantizer=xnor_weight_scale, name="xnor")(x)
    model = tf.keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))
    first, tern, xnor, head = (model.get_layer(n) for n in ("first", "tern", "xnor", "head"))
    assert [layer_facts.kernel_precision(l) for l in (first, tern, xnor, head)] == [1, 2, 1, 32]
    assert [layer_facts.input_precision(l) for l in (first, tern, xnor, head)] == [32, 1, 2, 32]
    assert [layer_facts.is_binary_input(l) for l in (first, tern, xnor, head)] == \
        [False, True, False, False]
    assert [l.name for l in layer_facts.binary_kernel_layers(model)] == ["first", "xnor"]
    assert not any(layer_facts.is_binary_conv(l) for l in model.layers)


def test_facts_asked_inside_a_graph_are_the_eager_facts():
    quantizer = lq.quantizers.SteSign(clip_value=1.5)   # a configuration no other test probes

    @tf.function
    def inside():
        return layer_facts.is_elementwise(quantizer) and layer_facts.is_sign(quantizer)

    assert inside()
    assert layer_facts.is_sign(quantizer) and layer_facts.is_elementwise(quantizer)
