import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import masks, models
from bnnprune_tf.errors import ModelError


def small():
    return models.build("mnist_bnn", (28, 28, 1), width=0.25)


def x(n=4, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 28, 28, 1)).astype("float32")


def test_prunable_copy_computes_the_same():
    model = small()
    masked = masks.prunable(model)
    assert masked is not model and masks.prunable(masked) is masked
    assert [l.name for l in masked.layers] == [l.name for l in model.layers]
    assert isinstance(masked.get_layer("conv2"), masks.MaskedQuantConv2D)
    assert isinstance(masked.get_layer("conv2"), lq.layers.QuantConv2D)
    np.testing.assert_array_equal(masked(x()).numpy(), model(x()).numpy())


def test_masked_binary_weight_is_zero_not_plus_one():
    layer = masks.prunable(small()).get_layer("conv2")
    keep = np.ones(16, np.float32)
    keep[3] = 0
    inputs = np.ones(8, np.float32)
    inputs[5] = 0
    layer.set_masks(channel=keep, input_channels=inputs)
    k = layer.effective_kernel().numpy()
    assert set(np.unique(k)) == {-1.0, 0.0, 1.0}
    assert not k[..., 3].any() and not k[:, :, 5, :].any()
    assert np.all(np.abs(np.delete(np.delete(k, 3, axis=3), 5, axis=2)) == 1)


def test_set_masks_validates():
    layer = masks.prunable(small()).get_layer("conv2")
    with pytest.raises(ModelError, match="channel_mask must have shape \\(16,\\), got \\(3,\\)"):
        layer.set_masks(channel=np.ones(3))
    with pytest.raises(ModelError, match="must hold only 0 and 1"):
        layer.set_masks(channel=np.full(16, 0.5))


def test_pruned_latent_weights_get_no_gradient_and_stay_put(mnist_small):
    masked = masks.prunable(small())
    layer = masked.get_layer("conv2")
    wm = (np.random.default_rng(0).random(layer.weight_mask.shape) > 0.5).astype("float32")
    layer.set_masks(weights=wm)
    before = layer.latent_kernel.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(masked(x()) ** 2)
    grad = tape.gradient(loss, layer.latent_kernel)
    assert np.all(tf.convert_to_tensor(grad).numpy()[wm == 0] == 0)
    masked.compile(tf.keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    masked.fit(mnist_small.batches("train", 64), epochs=1, verbose=0)
    after = layer.latent_kernel.numpy()
    np.testing.assert_array_equal(after[wm == 0], before[wm == 0])
    assert not np.allclose(after[wm == 1], before[wm == 1])
    assert np.abs(after).max() <= 1.0          # weight_clip still applies
    np.testing.assert_array_equal(layer.weight_mask.numpy(), wm)   # masks are not trained


def _set_some_masks(masked):
    layer = masked.get_layer("conv3")
    keep = np.ones(32, np.float32)
    keep[::3] = 0
    layer.set_masks(channel=keep)
    return layer.masks_numpy()


def test_masks_survive_save_and_load(tmp_path):
    import bnnprune_tf.files

    masked = masks.prunable(small())
    expected = _set_some_masks(masked)
    path = bnnprune_tf.files.save_model(masked, tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(path)
    layer = loaded.get_layer("conv3")
    assert isinstance(layer, masks.MaskedQuantConv2D)
    for name, value in expected.items():
        np.testing.assert_array_equal(layer.masks_numpy()[name], value)
    np.testing.assert_array_equal(loaded(x()).numpy(), masked(x()).numpy())


def test_masks_survive_checkpoint(tmp_path):
    masked = masks.prunable(small())
    expected = _set_some_masks(masked)
    prefix = tf.train.Checkpoint(model=masked).save(str(tmp_path / "ckpt"))
    fresh = masks.prunable(small())
    tf.train.Checkpoint(model=fresh).restore(prefix).assert_consumed()
    np.testing.assert_array_equal(fresh.get_layer("conv3").channel_mask.numpy(),
                                  expected["channel_mask"])
    np.testing.assert_array_equal(fresh(x()).numpy(), masked(x()).numpy())


def test_masks_inside_tf_function_and_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        masked = masks.prunable(small())
    layer = masked.get_layer("conv3")
    f = tf.function(lambda t: masked(t, training=False))
    before = f(x()).numpy()
    keep = np.ones(32, np.float32)
    keep[:16] = 0
    layer.set_masks(channel=keep)       # a variable update, seen without retracing
    after = f(x()).numpy()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, masked(x()).numpy(), atol=1e-6)
    result = strategy.run(lambda t: masked(t), args=(tf.constant(x()),))
    np.testing.assert_allclose(strategy.experimental_local_results(result)[0].numpy(), after,
                               atol=1e-6)


def test_all_supported_layer_kinds_and_subclassed_refusal():
    inputs = tf.keras.Input((6, 6, 3))
    h = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = tf.keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = lq.layers.QuantDepthwiseConv2D(1, depthwise_quantizer="ste_sign", name="qdw")(h)
    h = tf.keras.layers.Flatten()(h)
    h = lq.layers.QuantDense(5, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                             name="qdense")(h)
    out = tf.keras.layers.Dense(2, name="dense")(h)
    model = tf.keras.Model(inputs, out)
    masked = masks.prunable(model)
    kinds = {l.name: type(l).__name__ for l in masked.layers if masks.is_masked(l)}
    assert kinds == {"conv": "MaskedConv2D", "dw": "MaskedDepthwiseConv2D",
                     "qdw": "MaskedQuantDepthwiseConv2D", "qdense": "MaskedQuantDense",
                     "dense": "MaskedDense"}
    data = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(masked(data).numpy(), model(data).numpy(), atol=1e-5)
    dw = masked.get_layer("dw")
    keep = np.array([1, 0, 1, 1], np.float32)
    dw.set_masks(channel=keep)
    assert not dw.effective_kernel().numpy()[:, :, 1, :].any()

    class Sub(tf.keras.Model):
        def call(self, t):
            return t

    with pytest.raises(ModelError, match="subclassed model"):
        masks.prunable(Sub())


@pytest.mark.parametrize("quantizer", ["magnitude_aware_sign", lq.quantizers.DoReFa(2, "weights"),
                                       lq.quantizers.SteTern(ternary_weight_networks=True)])
def test_whole_kernel_quantizers_see_only_kept_weights(quantizer):
    inputs = tf.keras.Input((5, 5, 6))
    layer = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer=quantizer,
                                  name="c")
    model = tf.keras.Model(inputs, layer(inputs))
    masked = masks.prunable(model).get_layer("c")
    keep_in, keep_out = np.array([1, 0, 1, 1, 0, 1]), np.array([0, 1, 1, 1])
    masked.set_masks(channel=keep_out, input_channels=keep_in)
    latent = masked.latent_kernel.numpy()[:, :, keep_in > 0][..., keep_out > 0]
    shrunk = np.asarray(masked.kernel_quantizer(tf.constant(latent)))   # what shrink computes
    effective = masked.effective_kernel().numpy()
    np.testing.assert_array_equal(effective[:, :, keep_in > 0][..., keep_out > 0], shrunk)
    assert not effective[:, :, keep_in == 0].any() and not effective[..., keep_out == 0].any()
