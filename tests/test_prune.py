import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from bnnprune_tf import masks, models, profile, prune, training
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.shrink import shrink


def images(shape, n=4, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype("float32")


@pytest.mark.parametrize("name, shape", [("mnist_bnn", (28, 28, 1)), ("resnet18", (32, 32, 3)),
                                         ("binary_mlp", (28, 28, 1))])
def test_prune_filters_then_shrink_is_exact_and_smaller(name, shape):
    model = models.build(name, shape, width=0.25)
    masked = prune.prune_filters(model, "l1", ratio=0.5)
    small = prune.strip_pruning(masked)
    x = images(shape)
    np.testing.assert_allclose(small(x).numpy(), masked(x).numpy(), atol=1e-5)
    assert not any(masks.is_masked(l) for l in small.layers)
    before, after = profile.profile(model), profile.profile(small)
    assert after.binary_macs < 0.5 * before.binary_macs
    assert profile.profile(masked).to_dict()["totals"] == after.to_dict()["totals"]
    assert [l.name for l in small.layers] == [l.name for l in model.layers]


def test_residual_widths_stay_consistent():
    small = shrink(prune.prune_filters(models.build("resnet18", (32, 32, 3), width=0.25),
                                       "l1", ratio=0.5))
    stage1 = {small.get_layer(n).filters for n in ("conv_first", "s1b1_conv", "s1b4_conv")}
    assert stage1 == {8}
    assert small.get_layer("s2b1_shortcut").filters == small.get_layer("s2b1_conv").filters == 16


def test_pruning_again_never_restores_channels():
    masked = prune.prune_filters(models.build("mnist_bnn", (28, 28, 1), width=0.5),
                                 "random", ratio=0.5, seed=1)
    first = masked.get_layer("conv2").channel_mask.numpy().copy()
    prune.prune_filters(masked, "l1", ratio=0.75)
    second = masked.get_layer("conv2").channel_mask.numpy()
    assert second.sum() == 8 and np.all(second <= first)
    prune.prune_filters(masked, "l1", widths={"conv3": 40})     # other groups untouched
    np.testing.assert_array_equal(masked.get_layer("conv2").channel_mask.numpy(), second)
    assert masked.get_layer("conv3").channel_mask.numpy().sum() == 16   # still 75 % pruned


def test_callback_prunes_on_a_tfmot_schedule(mnist_small):
    masked = masks.prunable(models.build("mnist_bnn", (28, 28, 1), width=0.5))
    training.compile_model(masked, 1e-2)
    steps = training.steps_per_epoch(mnist_small, 64)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=steps,
                                                    frequency=steps // 3)
    callback = prune.PruneFilters(schedule, "l1", round_to=8)
    training.fit(masked, mnist_small, epochs=2, callbacks=[callback], verbose=0)
    assert [s for s, _ in callback.events] == [0, steps // 3, 2 * (steps // 3), 3 * (steps // 3)]
    assert callback.events[-1][1] == pytest.approx(0.5, abs=0.01)
    assert masked.get_layer("conv2").channel_mask.numpy().sum() == 16   # 32 * (1 - 0.5)
    small = prune.strip_pruning(masked)
    assert small.get_layer("conv2").filters == 16
    assert training.evaluate(training.compile_model(small), mnist_small, "val")["accuracy"] > 0.3

    plain = training.compile_model(models.build("mnist_bnn", (28, 28, 1), width=0.5))
    with pytest.raises(ModelError, match="PruneFilters needs a masked model"):
        training.fit(plain, mnist_small, epochs=1, callbacks=[prune.PruneFilters(schedule)],
                     verbose=0)


def test_masked_model_survives_save_load_then_shrinks(tmp_path):
    from bnnprune_tf import files

    masked = prune.prune_filters(models.build("mnist_bnn", (28, 28, 1), width=0.25), "l1",
                                 ratio=0.5)
    loaded = tf.keras.models.load_model(files.save_model(masked, tmp_path / "m.keras"))
    x = images((28, 28, 1))
    np.testing.assert_allclose(shrink(loaded)(x).numpy(), masked(x).numpy(), atol=1e-5)


def test_sequential_model_shrinks():
    import larq as lq

    model = tf.keras.Sequential([
        tf.keras.Input((6, 6, 1)),
        lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", name="c1"),
        tf.keras.layers.BatchNormalization(),
        lq.layers.QuantConv2D(6, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              name="c2"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(2),
    ])
    masked = prune.prune_filters(model, "l1", widths={"c1": 3, "c2": 2})
    small = shrink(masked)
    assert (small.get_layer("c1").filters, small.get_layer("c2").filters) == (3, 2)
    x = images((6, 6, 1))
    np.testing.assert_allclose(small(x).numpy(), masked(x).numpy(), atol=1e-5)


def test_unstructured_and_inconsistent_masks_do_not_shrink():
    masked = masks.prunable(models.build("mnist_bnn", (28, 28, 1), width=0.25))
    layer = masked.get_layer("conv2")
    wm = np.ones(layer.weight_mask.shape, np.float32)
    wm[0, 0, 0, 0] = 0
    layer.set_masks(weights=wm)
    with pytest.raises(ModelError, match="unstructured \\(weight\\) masks inside kept filters: "
                                         "1 weights are zero.*microcontroller runtime"):
        shrink(masked)
    layer.set_masks(weights=np.ones_like(wm))
    keep = np.ones(16, np.float32)
    keep[2] = 0
    layer.set_masks(channel=keep)        # by hand, without telling conv3
    with pytest.raises(ModelError, match="layer 'conv2' masks filters \\[2\\] that other layers "
                                         "still read"):
        shrink(masked)
    ChannelGraph(masked).apply_masks(masked, {})   # resets masks consistently
    assert shrink(masked).get_layer("conv2").filters == 16


def test_kept_widths_of_masked_and_plain_models():
    model = models.build("mnist_bnn", (28, 28, 1), width=0.5)
    assert prune.kept_widths(model) == {"conv_first": 16, "conv2": 32, "conv3": 64, "fc1": 10}
    masked = prune.prune_filters(model, "l1", ratio=0.5)
    assert prune.kept_widths(masked) == {"conv_first": 8, "conv2": 16, "conv3": 32, "fc1": 10}
    assert prune.kept_widths(shrink(masked)) == prune.kept_widths(masked)


def test_shrink_of_a_model_without_masks_is_an_identical_copy():
    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    copy = shrink(model)
    assert copy is not model
    assert [type(l) for l in copy.layers] == [type(l) for l in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), model.get_weights()))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(copy(x), model(x))
