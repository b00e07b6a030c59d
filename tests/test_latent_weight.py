import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from bnnprune_tf import masks, models, profile, select, sensitivity, training
from bnnprune_tf.errors import BnnpruneError, ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.methods import latent_weight as lw
from bnnprune_tf.shrink import shrink


def tiny(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return models.build("mnist_bnn", (28, 28, 1), width=0.25)


@pytest.fixture(scope="module")
def trained(mnist_small):
    model = tiny()
    training.compile_model(model, 1e-2, decay_steps=2 * training.steps_per_epoch(mnist_small, 64))
    training.fit(model, mnist_small, 2, verbose=0)
    return model


# ---------------------------------------------------------------- core extensions
def test_select_weights_prunes_the_lowest_with_deterministic_ties():
    scores = np.array([[3.0, 1.0, 1.0], [0.5, 1.0, 2.0]])
    keep = select.select_weights(scores, 0.5)          # floor(3) = 3 pruned
    # 0.5 first, then the three ties at 1.0: the higher flat indices (4, 2) go first
    assert np.flatnonzero(~keep.ravel()).tolist() == [2, 3, 4]
    assert select.select_weights(scores, 0.0).all()
    already = np.where(np.arange(6).reshape(2, 3) == 0, -np.inf, scores)
    assert np.flatnonzero(~select.select_weights(already, 0.1).ravel()).tolist() == [0]
    for bad in (1.0, -0.1):
        with pytest.raises(ModelError, match=r"\[0, 1\)"):
            select.select_weights(scores, bad)
    with pytest.raises(ModelError, match="NaN"):
        select.select_weights(np.array([np.nan, 1.0]), 0.5)


def test_keep_nonempty_drops_only_whole_empty_filters():
    masked = masks.prunable(tiny())
    layer = masked.get_layer("conv2")
    wm = np.ones(layer.weight_mask.shape, "float32")
    wm[..., 3] = 0                    # filter 3 empty
    wm[0, 0, 0, 5] = 0                # filter 5 partly masked: stays
    layer.set_masks(weights=wm)
    graph = ChannelGraph(masked)
    keep = select.keep_nonempty(graph, masked)
    group, = graph.groups_of("conv2")
    assert np.flatnonzero(~keep[group.id]).tolist() == [3]
    assert all(k.all() for gid, k in keep.items() if gid != group.id)
    with pytest.raises(ModelError, match="prunable first"):
        select.keep_nonempty(ChannelGraph(tiny()), tiny())


# ---------------------------------------------------------------- criterion
def test_pruned_set_is_the_smallest_latent_magnitudes_with_ties():
    masked = masks.prunable(tiny())
    layer = masked.get_layer("conv3")
    latent = layer.latent_kernel.numpy()
    latent.ravel()[::7] = 0.25                      # many exact ties in |latent|
    latent.ravel()[1::7] = -0.25
    layer.latent_kernel.assign(latent)
    ratio = 0.37
    lw.prune_latent(masked, {"conv3": ratio})
    n = latent.size
    flat = np.abs(latent).ravel()
    order = sorted(range(n), key=lambda i: (flat[i], -i))   # smallest first, high index on ties
    expected = sorted(order[: int(np.floor(ratio * n))])
    assert np.flatnonzero(layer.weight_mask.numpy().ravel() == 0).tolist() == expected
    others = [l for l in masked.layers if masks.is_masked(l) and l.name != "conv3"]
    assert all(l.weight_mask.numpy().all() for l in others)
    kernel = layer.effective_kernel().numpy()
    assert set(np.unique(kernel)) <= {-1.0, 0.0, 1.0} and (kernel == 0).sum() == len(expected)


def test_filter_score_is_the_mean_over_unmasked_weights():
    masked = masks.prunable(tiny())
    layer = masked.get_layer("conv2")
    wm = np.ones(layer.weight_mask.shape, "float32")
    wm[:, :, :2, 0] = 0
    wm[..., 1] = 0
    layer.set_masks(weights=wm)
    a = np.abs(layer.latent_kernel.numpy())
    assert lw.filter_latent_mean(layer)[0] == pytest.approx(a[:, :, 2:, 0].mean(), rel=1e-6)
    assert lw.filter_latent_mean(layer)[1] == 0.0
    assert lw.filter_latent_mean(layer)[2] == pytest.approx(a[..., 2].mean(), rel=1e-6)


def test_zero_ratio_leaves_the_layer_identical(mnist_small):
    model = tiny()
    x, _ = mnist_small.arrays("val", limit=32)
    masked = lw.prune_latent(model, {"conv_first": 0.0, "conv2": 0.0, "conv3": 0.5})
    for name in ("conv_first", "conv2"):
        layer, plain = masked.get_layer(name), model.get_layer(name)
        assert layer.weight_mask.numpy().all() and layer.channel_mask.numpy().all()
        latent = plain.kernel.latent_variable.numpy()
        np.testing.assert_array_equal(layer.effective_kernel().numpy(),
                                      np.where(latent >= 0, 1.0, -1.0))   # ste_sign
    intact = lw.prune_latent(model, {"conv_first": 0.0, "conv2": 0.0, "conv3": 0.0, "fc1": 0.0})
    np.testing.assert_array_equal(intact.predict(x, verbose=0), model.predict(x, verbose=0))


def test_zero_ratio_at_channel_level_is_not_rounded_down():
    model = models.build("mnist_bnn", (28, 28, 1), width=0.3)     # conv_first: 10 filters
    masked = lw.prune_latent(model, {"conv_first": 0.0, "conv2": 0.5}, "channel", round_to=8)
    assert masked.get_layer("conv_first").channel_mask.numpy().all()
    assert masked.get_layer("conv2").channel_mask.numpy().sum() == 8   # 9.5 of 19 -> 8


def test_operations_count_only_unmasked_weights():
    masked = lw.prune_latent(tiny(), {"conv_first": 0.2, "conv2": 0.5, "conv3": 0.7, "fc1": 0.3})
    expected = 0
    for layer in masked.layers:
        if masks.is_masked(layer):
            pixels = int(np.prod(layer.output.shape[1:-1]))
            expected += pixels * int(layer.full_mask().numpy().sum())
    cost = profile.profile(masked)
    assert sensitivity.operations(masked) == cost.binary_macs + cost.float_macs == expected
    dense = sensitivity.operations(masks.prunable(tiny()))
    assert expected < 0.6 * dense


# ---------------------------------------------------------------- training
def test_masks_stay_fixed_through_fine_tuning(trained, mnist_small):
    masked = masks.prunable(trained)
    ratios = {"conv2": 0.5, "conv3": 0.6}
    training.compile_model(masked, 1e-2)
    pruner = lw.PruneLatentWeights(ratios)
    snapshot = {}

    class Snapshot(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not snapshot:
                snapshot.update({n: (masked.get_layer(n).weight_mask.numpy(),
                                     masked.get_layer(n).latent_kernel.numpy()) for n in ratios})

    training.fit(masked, mnist_small, 1, callbacks=[pruner, Snapshot()], verbose=0)
    assert pruner.events == [(0, 1.0)]
    for name, (mask, latent) in snapshot.items():
        layer = masked.get_layer(name)
        np.testing.assert_array_equal(layer.weight_mask.numpy(), mask)
        pruned = mask == 0
        assert pruned.mean() == pytest.approx(ratios[name], abs=1e-3)
        now = layer.latent_kernel.numpy()
        np.testing.assert_array_equal(now[pruned], latent[pruned])     # frozen
        assert not np.allclose(now[~pruned], latent[~pruned])          # the rest trained
        assert np.all(layer.effective_kernel().numpy()[pruned] == 0)


def test_gradual_schedule_is_monotone_and_ends_at_the_ratios(trained, mnist_small):
    masked = masks.prunable(trained)
    steps = training.steps_per_epoch(mnist_small, 64)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4,
                                                    frequency=2)
    pruner = lw.PruneLatentWeights({"conv3": 0.6}, schedule=schedule)
    masks_seen = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            masks_seen.append(masked.get_layer("conv3").weight_mask.numpy())

    training.compile_model(masked, 1e-3)
    training.fit(masked, mnist_small, 1, callbacks=[pruner, Record()], verbose=0)
    assert steps > 4 and [s for s, _ in pruner.events] == [0, 2, 4]
    fractions = [f for _, f in pruner.events]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    pruned = [(m == 0) for m in masks_seen]
    assert all(np.all(b >= a) for a, b in zip(pruned, pruned[1:]))    # never unpruned
    assert pruned[-1].mean() == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ModelError, match="final sparsity"):
        lw.PruneLatentWeights({"conv3": 0.5}, schedule=tfmot.sparsity.keras.ConstantSparsity(
            0.0, 0))


def test_unstructured_lce_conversion_is_a_clear_error_unless_filters_are_empty(mnist_small):
    from converters import lce

    masked = lw.prune_latent(tiny(), {"conv2": 0.3})
    with pytest.raises(BnnpruneError, match="structured mode.*microcontroller runtime"):
        lce.convert(masked)
    # whole empty filters become pruned channels: shrink removes them, LCE converts
    model = tiny()
    latent = model.get_layer("conv2").kernel.numpy()
    latent[..., :4] *= 1e-3                        # four filters with the smallest |latent|
    model.get_layer("conv2").kernel.assign(latent)
    n = latent.size
    masked = lw.prune_latent(model, {"conv2": 4 * n / latent.shape[-1] / n})
    assert masked.get_layer("conv2").channel_mask.numpy()[:4].sum() == 0
    small = shrink(masked)
    assert small.get_layer("conv2").filters == latent.shape[-1] - 4
    x, y = mnist_small.arrays("test", limit=64)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-5)
    lce.verify(small, lce.convert(masked), x, y)


def test_structured_end_to_end_shrinks_converts_and_verifies(trained, mnist_small):
    from converters import lce

    result = lw.prune_by_latent_weights(trained, mnist_small, granularity="channel", budget=0.6,
                                        grid=(0.25, 0.5, 0.75), finetune_epochs=1, seed=0)
    assert set(result.metrics["ratios"]) == {"conv_first", "conv2", "conv3"}
    assert result.metrics["after"]["operations"] <= result.metrics["before"]["operations"]
    assert result.metrics["operations_reduction"] > 0.2
    widths = {l.name: l.filters for l in result.model.layers if hasattr(l, "filters")}
    full = {l.name: l.filters for l in trained.layers if hasattr(l, "filters")}
    assert any(widths[n] < full[n] for n in result.metrics["ratios"])
    assert sensitivity.operations(result.model) == result.metrics["after"]["operations"]
    x, y = mnist_small.arrays("test", limit=128)
    np.testing.assert_allclose(result.model.predict(x, verbose=0),
                               result.masked.predict(x, verbose=0), atol=1e-5)
    check = lce.verify(result.model, lce.convert(result.model), x, y)
    assert check.argmax_agreement == 1.0
    # the input model is untouched
    assert not any(masks.is_masked(l) for l in trained.layers)


def test_bad_granularity_and_targets():
    with pytest.raises(ModelError, match="unknown granularity"):
        lw.level("filter")
    with pytest.raises(ModelError, match="round_to"):
        lw.level("weight", round_to=8)
    with pytest.raises(ModelError, match="not both"):
        lw.choose_ratios(tiny(), np.zeros((1, 28, 28, 1)), np.zeros(1), epsilon=0.0, budget=0.5)
    with pytest.raises(ModelError, match="masked model"):
        cb = lw.PruneLatentWeights({"conv2": 0.5})
        cb.set_model(tiny())
        cb.on_train_begin()
