"""Sensitivity analysis on a hand-built model whose curves are known in closed form.

The model: 10 one-hot samples, all of class 1; ``dense1`` is the 10x10
identity, ``dense2`` gives class 1 a logit of 1 and class 0 a logit of 0.5
for every input. Sample i is classified correctly exactly while both
``dense1[i, i]`` and ``dense2[i, 1]`` survive.
"""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import masks, sensitivity
from bnnprune_tf.errors import ModelError

N = 10


def known_model():
    inputs = tf.keras.Input((N,))
    h = lq.layers.QuantDense(N, use_bias=False, name="dense1")(inputs)
    out = lq.layers.QuantDense(2, use_bias=False, name="dense2")(h)
    model = tf.keras.Model(inputs, out)
    w2 = np.zeros((N, 2), "float32")
    w2[:, 0], w2[:, 1] = 0.5, 1.0
    model.get_layer("dense1").set_weights([np.eye(N, dtype="float32")])
    model.get_layer("dense2").set_weights([w2])
    return masks.prunable(model)


X, Y = np.eye(N, dtype="float32"), np.ones(N, "int32")


def weight_score(layer):
    """dense1: |w| (the 90 zeros go first, by index); dense2: column 1 first, row order."""
    if layer.name == "dense1":
        return np.abs(layer.latent_kernel.numpy())
    score = np.zeros((N, 2))
    score[:, 1] = np.arange(N)          # dense2[i, 1] is the i-th weight pruned
    score[:, 0] = 100 + np.arange(N)
    return score


def channel_score(layer):
    return np.arange(int(layer.output.shape[-1]), dtype=float)   # filter 0 goes first


@pytest.fixture(scope="module")
def weight_result():
    return sensitivity.analyze(known_model(), sensitivity.WeightLevel(weight_score), X, Y,
                               progress=False)


def test_weight_level_curves_match_the_closed_form(weight_result):
    r = weight_result
    grid = np.array(sensitivity.DEFAULT_GRID)
    assert r.baseline_accuracy == 1.0 and r.baseline_operations == N * N + 2 * N
    assert list(r.curves) == ["dense1", "dense2"]
    d1, d2 = r.curves["dense1"], r.curves["dense2"]
    assert d1.ratios == d2.ratios == (0.0, *sensitivity.DEFAULT_GRID)
    # dense1: up to 90 of 100 weights pruned, all zeros: nothing changes but the op count
    assert d1.accuracy == (1.0,) * 10
    pruned1 = np.floor(np.r_[0, grid] * N * N + 1e-9)
    assert list(d1.operations) == list(N * N + 2 * N - pruned1)
    # dense2: floor(20 r) weights pruned, the first ten are column 1: samples 0.. fail
    pruned2 = np.floor(np.r_[0, grid] * 2 * N + 1e-9)
    np.testing.assert_allclose(d2.accuracy, np.maximum(0, N - pruned2) / N)
    assert list(d2.operations) == list(N * N + 2 * N - pruned2)


def test_ratios_within_epsilon(weight_result):
    assert weight_result.ratios_within(0.0) == {"dense1": 0.9, "dense2": 0.0}
    assert weight_result.ratios_within(0.2) == {"dense1": 0.9, "dense2": 0.1}
    assert weight_result.ratios_within(0.45) == {"dense1": 0.9, "dense2": 0.2}
    with pytest.raises(ModelError, match="epsilon"):
        weight_result.ratios_within(-0.1)


def test_budget_spends_the_free_layer_first(weight_result):
    # 120 operations; dense1 can give 90 for free
    assert weight_result.ratios_for_budget(0.3) == {"dense1": 0.9, "dense2": 0.0}
    # 24 left: 6 more must come from dense2, i.e. ratio 0.3 (floor(20 * 0.3) = 6)
    assert weight_result.ratios_for_budget(0.2) == {"dense1": 0.9, "dense2": 0.3}
    with pytest.raises(ModelError, match="grid's largest ratios leave"):
        weight_result.ratios_for_budget(0.05)


def test_budget_skips_ratios_that_round_to_the_same_width():
    # a layer of 8 filters pruned in blocks of 8: ratios 0.1-0.4 keep all 8 (no saving),
    # 0.5-0.9 remove the whole block; the budget must reach past the plateau
    grid = sensitivity.DEFAULT_GRID
    plateau = sensitivity.Curve("conv", (0.0, *grid), (1.0,) * 10,
                                (100,) * 5 + (20,) * 5)
    result = sensitivity.Sensitivity("channel", 1.0, 100, 10, {"conv": plateau})
    assert result.ratios_for_budget(0.5) == {"conv": 0.5}
    with pytest.raises(ModelError, match="leave 20"):
        result.ratios_for_budget(0.1)


def test_channel_level_curve_and_restored_masks():
    model = known_model()
    before = {l.name: l.masks_numpy() for l in model.layers if masks.is_masked(l)}
    level = sensitivity.ChannelLevel(channel_score)
    r = sensitivity.analyze(model, level, X, Y, grid=(0.1, 0.3, 0.5), progress=False)
    assert list(r.curves) == ["dense1"]          # dense2 reaches the output: fixed
    pruned = np.array([0, 1, 3, 5])              # channels 0.. go; samples 0.. fail
    np.testing.assert_allclose(r.curves["dense1"].accuracy, 1 - pruned / N)
    # a pruned channel takes a dense1 filter (10 weights) and a dense2 input row (2)
    assert list(r.curves["dense1"].operations) == list(N * N + 2 * N - 12 * pruned)
    for l in model.layers:
        if masks.is_masked(l):
            for k, v in l.masks_numpy().items():
                np.testing.assert_array_equal(v, before[l.name][k])


def test_report_outputs(weight_result):
    png = weight_result.plot(epsilon=0.01)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = weight_result.to_markdown({"dense1": 0.9})
    assert "| dense2 | +20.00 | +40.00 |" in md and md.count("\n| dense") == 2
    d = weight_result.to_dict()
    assert d["curves"]["dense2"]["accuracy"][1] == pytest.approx(0.8)


def test_bad_input_is_a_clear_error():
    model, level = known_model(), sensitivity.WeightLevel(weight_score)
    with pytest.raises(ModelError, match="grid must be increasing"):
        sensitivity.analyze(model, level, X, Y, grid=(0.5, 0.2), progress=False)
    with pytest.raises(ModelError, match="prunable layers"):
        sensitivity.analyze(model, level, X, Y, layers=["nope"], progress=False)
    with pytest.raises(ModelError, match="kernel's shape"):
        sensitivity.analyze(model, sensitivity.WeightLevel(lambda l: np.ones(3)), X, Y,
                            progress=False)
    with pytest.raises(ModelError, match="equally many"):
        sensitivity.accuracy_function(model, X, Y[:3])


def test_batchnorm_recalibration_is_exact_and_restored(mnist_small):
    from bnnprune_tf import masks, models, prune

    model = masks.prunable(models.build("mnist_bnn", (28, 28, 1), 10, width=0.25, seed=0))
    x, y = mnist_small.arrays("train", limit=300)
    bn = model.get_layer("conv2_bn")
    before = bn.moving_mean.numpy().copy()
    sensitivity.batchnorm_recalibration(model, x, batch_size=64)()
    h = tf.keras.Model(model.inputs, bn.input)(x).numpy().reshape(-1, bn.moving_mean.shape[0])
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(0), rtol=1e-3, atol=1e-5)

    level = sensitivity.ChannelLevel(lambda layer: np.arange(layer.output.shape[-1], 0, -1.0))
    masked = prune.prune_filters(model, "l1", ratio=0.0)
    stats = [w.copy() for w in masked.get_weights()]
    plain = sensitivity.analyze(masked, level, x[:100], y[:100], (0.5,), ["conv2"],
                                progress=False)
    calibrated = sensitivity.analyze(masked, level, x[:100], y[:100], (0.5,), ["conv2"],
                                     progress=False, calibration=x[100:])
    assert all(np.array_equal(a, b) for a, b in zip(stats, masked.get_weights()))  # restored
    copy = tf.keras.models.clone_model(masked)
    copy.set_weights(stats)
    assert sensitivity.accuracy_function(copy, x[:100], y[:100])() == plain.baseline_accuracy
    sensitivity.batchnorm_recalibration(copy, x[100:])()
    assert sensitivity.accuracy_function(copy, x[:100], y[:100])() == \
        calibrated.baseline_accuracy
    assert not np.array_equal(before, bn.moving_mean.numpy())
