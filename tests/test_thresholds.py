"""bnnprune_tf.thresholds: BatchNorm thresholds on integer sums moved half-way between two
integers keep every sign; LCE conversion moves them (where float rounding split it from
Keras)."""

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import thresholds

layers = tf.keras.layers
SIGN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip", use_bias=False)


def tied_model():
    """float conv -> BN -> binary conv (K = 3*3*28 = 252) -> BN -> binary 1x1 conv -> BN ->
    flatten; channel 0 of the middle BN maps the sum 0 to -3.8e-7, a tie at float32
    precision (the values of the channel found in an ETB model)."""
    tf.keras.utils.set_random_seed(0)
    x = inputs = tf.keras.Input((8, 8, 1))
    x = lq.layers.QuantConv2D(28, 3, padding="same", use_bias=False, name="first")(x)
    x = layers.BatchNormalization(scale=False, name="first_bn")(x)
    x = lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, name="middle", **SIGN)(x)
    x = layers.BatchNormalization(scale=False, name="middle_bn")(x)
    x = lq.layers.QuantConv2D(4, 1, name="last", **SIGN)(x)
    x = layers.BatchNormalization(name="last_bn")(x)
    model = tf.keras.Model(inputs, layers.Flatten()(x))
    rng = np.random.default_rng(0)
    for name in ("first_bn", "middle_bn", "last_bn"):
        bn = model.get_layer(name)
        bn.moving_mean.assign(rng.normal(0, 2, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(5, 50, bn.moving_variance.shape))
        bn.beta.assign(rng.normal(0, 0.3, bn.beta.shape))
    bn = model.get_layer("middle_bn")
    bn.moving_mean.assign(np.r_[-0.5646374, bn.moving_mean.numpy()[1:]].astype(np.float32))
    bn.moving_variance.assign(np.r_[282.3745, bn.moving_variance.numpy()[1:]].astype(np.float32))
    bn.beta.assign(np.r_[0.033601683, bn.beta.numpy()[1:]].astype(np.float32))
    return model


def test_thresholds_move_half_way_and_keep_every_sign():
    model = tied_model()
    before = [w.copy() for w in model.get_weights()]
    safe = thresholds.centered(model)
    # the first BN follows a float conv, the last feeds no sign: neither is a threshold
    assert thresholds.threshold_layers(model) == [("middle", "middle_bn")]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    x = np.random.default_rng(1).normal(size=(256, 8, 8, 1)).astype(np.float32)
    sums = tf.keras.Model(model.inputs, model.get_layer("middle").output).predict(x, verbose=0)
    bn, new = model.get_layer("middle_bn"), safe.get_layer("middle_bn")
    sd = np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)

    def signs(beta):       # float64, larq's sign(0) = +1
        return (sums - bn.moving_mean.numpy()) / sd + beta >= 0

    assert (sums[..., 0] == 0).sum() > 100                      # the tie is reached
    assert np.array_equal(signs(bn.beta.numpy().astype(np.float64)),
                          signs(new.beta.numpy().astype(np.float64)))
    t = bn.moving_mean.numpy() - new.beta.numpy() * sd          # new thresholds on the sum
    np.testing.assert_allclose(np.abs(t - np.round(t)), 0.5, atol=1e-3)
    np.testing.assert_array_equal(safe.predict(x, verbose=0), model.predict(x, verbose=0))
    # the other layers are untouched
    for name in ("first_bn", "last_bn", "middle", "last"):
        for a, b in zip(model.get_layer(name).get_weights(), safe.get_layer(name).get_weights()):
            assert np.array_equal(a, b), name


def test_lce_convert_moves_the_thresholds_and_agrees_with_keras():
    """On the ETB model where this was found (arena etb_r30 seed 2), LCE agreed with Keras
    on 94.8 % of 1,000 test images before and on 100 % after. LCE's own rounding is not
    reproduced by the planted tie here, so this checks the conversion end to end."""
    from converters import lce

    model = tied_model()
    x = np.random.default_rng(1).normal(size=(256, 8, 8, 1)).astype(np.float32)
    flatbuffer = lce.convert(model)
    assert flatbuffer == lce.convert(thresholds.centered(model))   # convert moves them
    assert lce.verify(model, flatbuffer, x, atol=1e-4).argmax_agreement == 1.0


def test_scaled_sign_kernels_are_thresholds_on_integer_sums_too():
    """A magnitude-aware sign kernel computes ``scale * S``: its BatchNorm is a threshold on
    ``S`` as well; a tie there is found by lint and moved, keeping every float64 sign."""
    from converters.lint import lint

    tf.keras.utils.set_random_seed(0)
    x = inputs = tf.keras.Input((6, 6, 4))
    x = lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, name="mag",
                              **{**SIGN, "kernel_quantizer": "magnitude_aware_sign"})(x)
    x = layers.BatchNormalization(name="mag_bn")(x)
    x = lq.layers.QuantConv2D(4, 1, name="last", **SIGN)(x)
    model = tf.keras.Model(inputs, layers.Flatten()(x))
    step = thresholds.sum_step(model.get_layer("mag"))
    assert step.shape == (8,) and np.all(step > 0) and not np.allclose(step, 1)
    assert thresholds.sum_step(model.get_layer("last")).tolist() == [1.0] * 4
    bn = model.get_layer("mag_bn")
    mean = (step * np.arange(-8, 8, 2) + 1e-6 * step).astype(np.float32)   # S = t + 1e-6
    bn.moving_mean.assign(mean)
    assert thresholds.threshold_layers(model) == [("mag", "mag_bn")]
    assert [f.layer for f in lint(model) if f.rule == "bn-threshold-tie"] == ["mag"]
    safe = thresholds.centered(model)
    new = safe.get_layer("mag_bn")
    sd = np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    t = (bn.moving_mean.numpy() - new.beta.numpy() * sd / bn.gamma.numpy()) / step
    np.testing.assert_allclose(np.abs(t - np.round(t)), 0.5, atol=1e-3)
    sums = np.arange(-36, 37, 2)[:, None].astype(np.float64)     # every sum of 36 taps

    def signs(beta):
        return (step * sums - bn.moving_mean.numpy()) / sd * bn.gamma.numpy() + beta >= 0

    assert np.array_equal(signs(bn.beta.numpy().astype(np.float64)),
                          signs(new.beta.numpy().astype(np.float64)))
    assert [f.layer for f in lint(safe) if f.rule == "bn-threshold-tie"] == []
