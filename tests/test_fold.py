"""BatchNorm + sign folding into integer thresholds (converters.fold)."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import models
from bnnprune_tf.errors import ConversionError
from converters import fold

layers = tf.keras.layers


def randomize_batchnorm(model, seed=0, dead_channel=True):
    """Random BN statistics with negative gammas and (optionally) one gamma of 0."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 4, n))
            layer.moving_variance.assign(rng.uniform(0.5, 20, n))
            layer.beta.assign(rng.normal(0, 1, n))
            if layer.scale:
                gamma = rng.normal(0, 1, n)
                if dead_channel:
                    gamma[0] = 0.0
                layer.gamma.assign(gamma)
    return model


def ternary(w):
    """A kernel quantizer with real zeros, as unstructured pruning leaves them."""
    return tf.where(tf.abs(w) < 0.05, tf.zeros_like(w), tf.sign(w))


def irregular_bnn(seed=0):
    """Like a shrunk mnist_bnn: odd channel counts, a stride, same-zero padding, a
    ternary kernel, a bias and BatchNorm with gamma in hidden layers."""
    tf.keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
    inputs = tf.keras.Input((28, 28, 1))
    x = lq.layers.QuantConv2D(5, 3, padding="same", pad_values=1.0, kernel_quantizer="ste_sign",
                              use_bias=False, name="first")(inputs)
    x = layers.BatchNormalization(scale=True)(x)
    x = layers.MaxPool2D(2)(x)
    x = lq.layers.QuantConv2D(11, 3, strides=2, padding="same", name="strided_zero_pad",
                              **binary)(x)
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(7, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              kernel_quantizer=ternary, use_bias=True, name="ternary")(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPool2D(2, padding="same")(x)
    x = lq.layers.QuantConv2D(10, 4, name="classifier", **binary)(x)
    x = layers.BatchNormalization(scale=True)(x)
    x = layers.Flatten()(x)
    outputs = layers.Activation("softmax")(x)
    model = tf.keras.Model(inputs, outputs, name="irregular")
    rng = np.random.default_rng(seed)
    model.get_layer("ternary").bias.assign(rng.normal(0, 2, 7))
    return randomize_batchnorm(model, seed)


def test_threshold_equals_the_sign_of_the_affine_map_on_every_integer():
    rng = np.random.default_rng(1)
    scale = np.concatenate([rng.normal(0, 1, 40), [0.0, 0.0, 1e-9, -1e-9]])
    offset = np.concatenate([rng.normal(0, 10, 40), [0.5, -0.5, 1.0, 1.0]])
    offset[:5] = np.round(offset[:5]) * np.abs(scale[:5])   # exact ties: BN = 0 -> +1
    s, t = fold.threshold(scale, offset, bound=30)
    sums = np.arange(-30, 31)[:, None]
    expected = np.where(scale * sums + offset >= 0, 1, -1)
    got = np.where(s * sums >= t, 1, -1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["mnist_bnn", "binary_mlp"])
def test_integer_model_reproduces_keras_logits_on_real_images(name, mnist_small):
    model = randomize_batchnorm(models.build(name, (28, 28, 1), 10, width=0.2))
    x, _ = mnist_small.arrays("test", limit=64)
    folded = fold.fold(model)
    codes = folded.quantize_input(x)
    raw = mnist_small.split("test")[0][:64].reshape(codes.shape).astype(int)
    np.testing.assert_array_equal(codes, raw - 128)          # every pixel level is exact
    keras = fold.keras_logits(model, x)
    integer = folded.logits(codes)
    np.testing.assert_allclose(integer, keras, atol=1e-4)
    np.testing.assert_array_equal(integer.argmax(1), keras.argmax(1))


def test_hidden_activations_equal_larq_signs():
    model = irregular_bnn()
    folded = fold.fold(model)
    assert [type(l).__name__ for l in folded.layers] == [
        "BinaryConv", "MaxPool", "BinaryConv", "BinaryConv", "MaxPool", "OutputConv"]
    x = np.random.default_rng(2).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
    codes = folded.quantize_input(x)
    real = (fold.INPUT_SCALE * (codes.astype(np.float64) + fold.INPUT_OFFSET)).astype(np.float32)
    # the input of the classifier is sign(max-pool(BN(...))) in Larq
    probe = tf.keras.Model(model.inputs, model.get_layer("classifier").input)
    larq = np.where(probe(real, training=False).numpy() >= 0, 1, -1)
    np.testing.assert_array_equal(folded.hidden(codes), larq)
    assert set(np.unique(folded.layers[3].weights)) == {-1, 0, 1}


def test_dead_channel_has_zero_weights_and_a_constant_output():
    folded = fold.fold(irregular_bnn())
    first = folded.layers[0]
    assert not first.weights[0].any()
    out = first(np.random.default_rng(3).integers(-128, 128, (4, 28, 28, 1)).astype(np.int8))
    assert len(np.unique(out[..., 0])) == 1


def test_unsupported_layers_are_named():
    inputs = tf.keras.Input((8, 8, 1))
    x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu", name="my_relu")(x)
    x = lq.layers.QuantConv2D(3, 6, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    with pytest.raises(ConversionError, match="my_relu"):
        fold.fold(tf.keras.Model(inputs, layers.Flatten()(x)))

    inputs = tf.keras.Input((8, 8, 1))
    y = lq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, kernel_quantizer="ste_sign")(inputs)
    z = layers.Add(name="residual")([y, lq.layers.QuantConv2D(
        4, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
        kernel_quantizer="ste_sign")(y)])
    with pytest.raises(ConversionError, match="residual|chain"):
        fold.fold(tf.keras.Model(inputs, z))

    inputs = tf.keras.Input((8, 8, 1))
    x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign")(inputs)
    x = lq.layers.QuantConv2D(3, 6, kernel_quantizer="ste_sign", name="real_input")(x)
    with pytest.raises(ConversionError, match="real_input"):
        fold.fold(tf.keras.Model(inputs, x))


def test_binary_cost_counts_the_nonzero_weights_of_binary_input_convs():
    from bnnprune_tf import methods, profile

    model = models.build("mnist_bnn", (28, 28, 1), width=0.25, seed=0)
    dense = fold.fold(model).binary_cost()
    assert dense["binary_macs"] == profile.profile(model).binary_macs
    assert dense["binary_params"] == sum(int(np.prod(l.kernel.shape)) for l in model.layers
                                         if getattr(l, "input_quantizer", None) is not None)
    method = methods.get("l1")(level="weight", ratio=0.5)
    masked = method.prepare(model)
    method.apply(masked)                                 # half of each layer's weights -> 0
    cost = fold.fold(masked).binary_cost()
    assert 0.45 < cost["binary_params"] / dense["binary_params"] < 0.55
    assert 0.45 < cost["binary_macs"] / dense["binary_macs"] < 0.55
