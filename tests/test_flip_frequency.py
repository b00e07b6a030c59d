import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import layer_facts, masks, models, profile, prune, training
from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods import flip_frequency as wff
from bnnprune_tf.shrink import shrink


def tiny():
    return models.build("mnist_bnn", (28, 28, 1), width=0.25)


def test_counter_invariants():
    model = tiny()
    layers = layer_facts.binary_kernel_layers(model)
    assert [l.name for l in layers] == ["conv_first", "conv2", "conv3", "fc1"]
    counter = wff.FlipCounter(layers)
    kernel = layer_facts.latent_kernel(model.get_layer("conv2"))
    base = np.abs(kernel.numpy()) + 0.1            # all positive
    alternate = np.zeros(base.shape, bool)
    alternate[..., 0] = True                       # filter 0 flips at every sample
    zero = np.zeros(base.shape, bool)
    zero[0, 0, 0, 1] = True                        # exactly 0 is +1: never a flip
    history = []
    for k in range(6):
        w = np.where(alternate & (k % 2 == 1), -base, base)
        kernel.assign(np.where(zero, 0.0, w))
        counter.sample()
        history.append(counter.counts_numpy()["conv2"].copy())
    counts = history[-1]
    assert counts.dtype == np.int32 and int(counter.samples) == 6
    assert np.all(counts[..., 0] == 5)             # alternating: every boundary counts
    assert np.all(counts[..., 1:] == 0)            # never flipping (incl. exact zeros): 0
    assert all(np.all(b >= a) for a, b in zip(history, history[1:]))   # monotone
    assert counts.max() <= int(counter.samples) - 1                       # bounded
    stats = wff.layer_stats(counter, threshold=0)
    assert stats["conv2"].p == pytest.approx(1 / 16)  # 1 of 16 filters flips
    assert stats["conv2"].histogram[0] == counts.size - counts[..., 0].size
    assert stats["conv2"].histogram[5] == counts[..., 0].size
    assert all(0.0 <= s.p <= 1.0 for s in stats.values())
    assert wff.layer_stats(counter, threshold=np.inf)["conv2"].p == 0.0
    np.testing.assert_allclose(stats["conv2"].filter_mean, [5] + [0] * 15)


def test_counts_round_trip_through_a_checkpoint(tmp_path):
    model = tiny()
    counter = wff.FlipCounter(layer_facts.binary_kernel_layers(model))
    kernel = layer_facts.latent_kernel(model.get_layer("conv3"))
    counter.sample()
    kernel.assign(-kernel)
    counter.sample()
    path = tf.train.Checkpoint(flips=counter).save(str(tmp_path / "ckpt"))
    fresh = wff.FlipCounter(layer_facts.binary_kernel_layers(model))
    tf.train.Checkpoint(flips=fresh).restore(path).assert_consumed()
    for name, c in counter.counts_numpy().items():
        np.testing.assert_array_equal(fresh.counts_numpy()[name], c)
    assert int(fresh.samples) == 2
    other = models.build("mnist_bnn", (28, 28, 1), width=0.25, seed=1)   # other weights
    weights = [w.copy() for w in other.get_weights()]
    elsewhere = wff.FlipCounter(layer_facts.binary_kernel_layers(other))
    tf.train.Checkpoint(flips=elsewhere).restore(path).assert_consumed()
    assert all(np.array_equal(a, b) for a, b in zip(weights, other.get_weights()))
    assert not any("kernel" in name for name, _ in tf.train.list_variables(path))


def test_tracker_intervals_and_sampling(mnist_small):
    model = training.compile_model(tiny(), 1e-2)
    by_epoch = wff.FlipTracker(last_epochs=2)
    by_step = wff.FlipTracker(steps=(3, 12), every=2)
    training.fit(model, mnist_small, epochs=3, callbacks=[by_epoch, by_step], verbose=0)
    assert int(by_epoch.counter.samples) == 3          # interval start + 2 epoch ends
    assert int(by_step.counter.samples) == 5           # steps 4, 6, 8, 10, 12
    for counts in by_epoch.counter.counts_numpy().values():
        assert counts.max() <= 2
    assert any(c.sum() > 0 for c in by_epoch.counter.counts_numpy().values())
    with pytest.raises(ModelError, match="give exactly one interval"):
        wff.FlipTracker(last_epochs=2, steps=(0, 3))
    with pytest.raises(ModelError, match="every must be 'epoch' or a positive number"):
        wff.FlipTracker(last_epochs=2, every=0)


def test_tracker_resumes_counts_and_logs(mnist_small, tmp_path):
    model = training.compile_model(tiny(), 1e-2)
    first = wff.FlipTracker(epochs=(0, 3), checkpoint_dir=tmp_path / "flips",
                            log_dir=tmp_path / "tb")
    training.fit(model, mnist_small, epochs=2, callbacks=[first], verbose=0)
    resumed = wff.FlipTracker(epochs=(0, 3), checkpoint_dir=tmp_path / "flips")
    training.fit(model, mnist_small, epochs=1, callbacks=[resumed], verbose=0)
    assert int(resumed.counter.samples) == int(first.counter.samples) + 1 == 4
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_widths_and_flip_criterion():
    model = masks.prunable(tiny())
    counter = wff.FlipCounter(layer_facts.binary_kernel_layers(model))
    counts = counter.counts[counter.layer_names.index("conv2")]
    c = np.zeros(counts.shape, np.int32)
    c[..., 3] = 2                                   # filter 3 flips most
    c[0, 0, 0, 5] = 1                               # filter 5 flips once
    counts.assign(c)
    scores = wff.flip_criterion(counter)(model.get_layer("conv2"))
    assert np.argmin(scores) == 3 and np.argsort(scores)[1] == 5
    stats = {"conv2": wff.LayerFlips("conv2", 0.25, [], np.zeros(16)),
             "conv3": wff.LayerFlips("conv3", 1.0, [], np.zeros(32)),
             "fc1": wff.LayerFlips("fc1", 0.5, [], np.zeros(10))}
    widths = wff.widths_from_flips(model, stats)
    assert widths == {"conv2": 12, "conv3": 1}     # fc1 (the classifier) is never pruned


def test_callback_prunes_at_the_end_of_fit(mnist_small):
    model = masks.prunable(tiny())
    training.compile_model(model, 1e-2)
    pruner = wff.PruneByFlipFrequency(last_epochs=2, threshold=0)
    training.fit(model, mnist_small, epochs=2, callbacks=[pruner], verbose=0)
    for name, (before, after) in pruner.widths.items():
        assert after == pruner.p_widths[name] <= before      # round((1 - p_l) C_l), no round_to
    small = shrink(model)
    for name, (_, after) in pruner.widths.items():
        assert small.get_layer(name).filters == after
    assert small.get_layer("conv3").input_shape[-1] == small.get_layer("conv2").filters
    inf = wff.PruneByFlipFrequency(last_epochs=1, threshold=np.inf)
    untouched = masks.prunable(tiny())
    training.fit(training.compile_model(untouched), mnist_small, epochs=1, callbacks=[inf],
                 verbose=0)
    assert all(a == b for a, b in inf.widths.values())       # T = inf prunes nothing


def test_one_call_procedure(mnist_small):
    result = wff.prune_by_flip_frequency(
        tiny(), mnist_small, epochs=3, interval=2, max_iterations=2, accuracy_budget=1.0,
        finetune_epochs=2, round_to=None, log=lambda m: None)
    assert result.iterations[0].index == 0 and len(result.iterations) >= 2
    assert result.iterations[1].binary_macs < result.iterations[0].binary_macs
    assert result.stop_reason in ("max p_l stopped falling", "max_iterations reached")
    chosen = result.iterations[result.chosen]
    assert profile.profile(result.model).binary_macs == chosen.binary_macs
    assert {l.name: l.filters for l in result.model.layers if l.name in chosen.widths} \
        == chosen.widths
    with pytest.raises(ModelError, match="follow_up must be 'finetune' or 'scratch'"):
        wff.prune_by_flip_frequency(tiny(), mnist_small, epochs=2, interval=1, follow_up="x")


def test_pretrained_model_is_only_measured_then_retrained_from_scratch(mnist_small):
    trained = training.compile_model(tiny(), 1e-2)
    training.fit(trained, mnist_small, epochs=2, verbose=0)
    trained = prune.prune_filters(trained, "l1", widths={"conv3": 31})      # masked input
    weights = [w.copy() for w in trained.get_weights()]
    seen = []
    result = wff.prune_by_flip_frequency(
        trained, mnist_small, epochs=2, interval=1, pretrained=True, max_iterations=1,
        accuracy_budget=1.0, follow_up="scratch", log=seen.append)
    assert len(result.iterations) == 2 and result.stop_reason in (
        "max p_l stopped falling", "max_iterations reached")
    assert seen[0].startswith("[wff] round 0: ") and "validation images (control" in seen[0]
    assert prune.kept_widths(result.model) == result.iterations[result.chosen].widths
    assert all(np.array_equal(a, b) for a, b in zip(weights, trained.get_weights()))  # untouched
    assert result.iterations[0].widths["conv3"] == 31       # round 0 starts from the input


def test_only_binary_input_layers_are_counted_and_pruned(mnist_small):
    model = masks.prunable(tiny())
    assert [l.name for l in wff.flip_layers(model)] == ["conv2", "conv3", "fc1"]
    assert [l.name for l in wff.flip_layers(model, include_float_input=True)][0] == "conv_first"
    pruner = wff.PruneByFlipFrequency(last_epochs=1, threshold=-1)    # every weight "flips"
    training.fit(training.compile_model(model, 1e-2), mnist_small, epochs=1,
                 callbacks=[pruner], verbose=0)
    assert set(pruner.widths) == {"conv2", "conv3"}          # not the first layer, classifier
    assert prune.kept_widths(model)["conv_first"] == 8


def test_masked_input_counts_kept_filters_and_live_weights_only():
    model = prune.prune_filters(tiny(), "l1", widths={"conv2": 8})   # 16 -> 8 kept
    counter = wff.FlipCounter(wff.flip_layers(model))
    layer = model.get_layer("conv2")
    live = np.asarray(layer.full_mask()) > 0
    counts = counter.counts[counter.layer_names.index("conv2")]
    counts.assign(live.astype(np.int32))                  # every live weight flipped once
    stats = wff.layer_stats(counter, 0, model)
    assert stats["conv2"].p == 1.0                        # frozen pruned weights do not count
    stats["conv2"] = wff.LayerFlips("conv2", 0.5, [], np.zeros(16))
    assert wff.widths_from_flips(model, stats)["conv2"] == 4          # of 8 kept, not of 16


def test_round_to_goes_to_the_nearest_block_never_further_than_one():
    model = masks.prunable(tiny())                        # conv2 16, conv3 32 wide
    rounded = wff.round_widths(model, {"conv2": 13, "conv3": 30}, 8)
    assert rounded == {"conv2": 16, "conv3": 32}         # floor would cut 16 -> 8, 32 -> 24
    assert wff.round_widths(model, {"conv2": 3, "conv3": 27}, 8) == {"conv2": 8, "conv3": 24}
    assert wff.round_widths(model, {"conv2": 13}, None) == {"conv2": 13}


def test_round_choice_counts_whole_images_against_the_control():
    def it(index, macs, correct, control, n=400):
        return wff.Iteration(index, correct, control, n, macs, {}, {})

    rounds = [it(0, 100, 392, 392), it(1, 80, 384, 392), it(2, 60, 380, 393)]
    assert 0.98 - 0.96 > 0.02                              # as floats, 8 of 400 is over 0.02
    assert wff.choose_round(rounds, 0.02).index == 1        # 8 images lost: within 8
    assert wff.choose_round(rounds, 0.0).index == 0
    assert wff.choose_round(rounds, 0.04).index == 2        # 13 lost <= 16: the cheapest
    assert wff.choose_round([it(0, 9, 71, 71, 100), it(1, 5, 42, 71, 100)], 0.29).index == 1
