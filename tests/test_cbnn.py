"""CBNN: bit-level sensitivity (the reference's checks) and the ``cbnn`` method."""

import json

import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import bit_sensitivity, data, methods, models, training
from bnnprune_tf.bitslice import BitSlice, top
from bnnprune_tf.errors import DataError, ModelError
from bnnprune_tf.methods import cbnn
from bnnprune_tf.reporting import render_png


@pytest.fixture(scope="module")
def digits():
    """Fashion-MNIST (Debian dataset-fashion-mnist): its many grey levels make the low
    bits texture noise, as in natural images (MNIST's near-binary pixels repeat the same
    picture in every slice)."""
    return data.load("fashion_mnist", seed=0, limit=2000)


@pytest.fixture(scope="module")
def sliced_trained(digits):
    """mnist_bnn reading all 8 bit slices through a real-valued first conv (CBNN's
    baseline), trained briefly."""
    model = cbnn.slice_input(models.build("mnist_bnn", digits.input_shape, width=0.25),
                             first="float")
    training.train(model, digits.pixels(), epochs=3, learning_rate=1e-2, seed=0)
    return model


def test_slice_input_and_keep_slices(digits):
    model = models.build("mnist_bnn", digits.input_shape, width=0.25)
    sliced = cbnn.slice_input(model)
    first = sliced.get_layer("conv_first")
    assert isinstance(sliced.layers[1], BitSlice)
    assert first.kernel.shape[2] == 8 and first.input_quantizer is not None
    assert first.kernel_quantizer is not None
    real = cbnn.slice_input(model, first="float").get_layer("conv_first")
    assert real.input_quantizer is None and real.kernel_quantizer is None
    assert model.get_layer("conv_first").input_quantizer is None          # caller's model
    kept = cbnn.keep_slices(cbnn.slice_input(model, first="float"), (5, 7), first="binary")
    assert kept.get_layer("conv_first").input_quantizer is not None
    kept = cbnn.keep_slices(sliced, (5, 7))
    np.testing.assert_array_equal(kept.get_layer("conv_first").kernel.numpy(),
                                  first.kernel.numpy()[:, :, [5, 7], :])
    x = digits.pixels().arrays("val", limit=8)[0]
    assert kept.predict(x, verbose=0).shape == (8, 10)
    with pytest.raises(ModelError, match="not read"):
        cbnn.keep_slices(kept, (4,))
    with pytest.raises(ModelError, match="functional"):
        cbnn.slice_input(tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))]))


def test_reference_checks_on_a_trained_model(sliced_trained, digits):
    x, y = digits.pixels().arrays("val")
    result = bit_sensitivity.analyze(sliced_trained, x, y)
    # randomizing 0 slices reproduces the baseline exactly
    assert result.lowest[0] == result.baseline
    assert result.baseline / result.samples > 0.65
    # all 8 slices randomized: about chance (10 classes)
    assert result.lowest[8] / result.samples < 0.2
    # the cost grows with the slices' significance: randomizing the least significant slice
    # alone is cheap; single slices of 222 digits images are too noisy to order (the
    # Fashion-MNIST benchmark shows that order), the k lowest together are not (below)
    cost = [result.cost(c) for c in result.single]
    assert cost[0] <= 5, result
    lowest = [result.cost(c) for c in result.lowest]
    assert all(b >= a - 4 for a, b in zip(lowest, lowest[1:])) and lowest[8] > 40, result
    assert np.corrcoef(np.arange(9), lowest)[0, 1] > 0.8, result
    # kept slices: the complement costs <= delta, one slice fewer costs more
    kept = result.kept_slices(0.05)
    dropped = 8 - len(kept)
    assert kept == top(len(kept)) and 1 <= dropped <= 5
    assert result.baseline - result.lowest[dropped] <= 0.05 * result.samples
    assert result.baseline - result.lowest[dropped + 1] > 0.05 * result.samples
    assert set(result.rows()) == {"none", *(f"bit {k}" for k in range(8))}
    assert render_png(result.figure(0.05))[:4] == b"\x89PNG"
    stored = json.loads(json.dumps(result.to_dict()))        # lists, as read from JSON
    assert bit_sensitivity.BitSensitivity.from_dict(stored) == result
    with pytest.raises(DataError, match="raw pixels"):
        bit_sensitivity.analyze(sliced_trained, digits.arrays("val")[0], y)


def test_cbnn_method_end_to_end(sliced_trained, digits):
    before = [w.copy() for w in sliced_trained.get_weights()]
    method = methods.get("cbnn")(delta=0.05, widths=[0.5], epochs=1, budget=0.5,
                                 learning_rate=1e-2)
    result = method.run(sliced_trained, methods.Context(digits, epochs=1, learning_rate=1e-2))
    m = result.metrics
    small = result.model
    assert m["input"] == "pixels" and tuple(m["slices"]) == small.layers[1].slices
    assert len(m["slices"]) < 8 and m["width"] == 0.5
    first = small.get_layer("conv_first")
    assert first.kernel.shape[2] == len(m["slices"]) and first.input_quantizer is not None
    assert small.get_layer("conv3").filters == sliced_trained.get_layer("conv3").filters // 2
    assert m["binary_params"] == cbnn.binary_params(small)
    x, y = digits.pixels().arrays("val")
    assert bit_sensitivity.correct(small, x, y) == m["val_correct"]
    assert ("within budget" in result.tables["candidates (validation)"][
        f"{len(m['slices'])} slices, width {m['width']}"])
    assert all(np.array_equal(a, b) for a, b in zip(before, sliced_trained.get_weights()))
    assert "raw pixel values 0..255" in " ".join(result.notes)


def test_slice_counts_choose_the_slices_on_validation_with_the_binary_first_conv(
        sliced_trained, digits):
    method = methods.get("cbnn")(slice_counts=[8, 2, 3], widths=[0.5, 1.0], epochs=1,
                                 budget=0.99, learning_rate=1e-2)
    result = method.run(sliced_trained, methods.Context(digits, epochs=1, learning_rate=1e-2))
    rows = result.tables["candidates (validation)"]
    # each count trained once at the smallest width; the budget then stops the width search
    assert set(rows) == {f"{k} slices, width 0.5" for k in (2, 3, 8)}
    counts = {k: rows[f"{k} slices, width 0.5"]["val correct"] for k in (2, 3, 8)}
    best = max(counts.values())
    k = min(k for k, c in counts.items() if c == best)        # fewer slices on a tie
    m = result.metrics
    assert m["slices"] == list(top(k)) and m["width"] == 0.5 and m["val_correct"] == best
    first = result.model.get_layer("conv_first")
    assert first.kernel.shape[2] == k and first.kernel_quantizer is not None   # binary
    x, y = digits.pixels().arrays("val")
    assert bit_sensitivity.correct(result.model, x, y) == best


def test_sensitivity_selector_spends_the_width_budget_by_layer(sliced_trained, digits):
    from bnnprune_tf import sensitivity
    from bnnprune_tf.prune import kept_widths

    x, y = digits.pixels().arrays("val")
    reduced = cbnn.keep_slices(sliced_trained, (4, 5, 6, 7), "binary")
    by_layer = methods.get("cbnn")(selector="sensitivity", round_to=1)._shrink(reduced, 0.5, x, y)
    uniform = methods.get("cbnn")(selector="uniform", round_to=1)._shrink(reduced, 0.5, x, y)
    # the per-layer allocation keeps at most the operations of the uniform factor 0.5, but
    # not by halving every layer
    ops = sensitivity.operations
    assert 0.9 * ops(uniform) <= ops(by_layer) <= ops(uniform) < ops(reduced)
    assert kept_widths(by_layer) != kept_widths(uniform)
    assert reduced.get_layer("conv3").filters == sliced_trained.get_layer("conv3").filters


@pytest.mark.parametrize("retrain", ["finetune", "scratch"])
def test_retrain_finetune_keeps_the_shrunk_weights_scratch_draws_new_ones(sliced_trained, digits,
                                                                          retrain):
    method = methods.get("cbnn")(slices=[4, 5, 6, 7], widths=[1.0], epochs=1, budget=0.99,
                                 learning_rate=1e-7, retrain=retrain)
    result = method.run(sliced_trained, methods.Context(digits, epochs=1))
    assert result.metrics["retrain"] == retrain
    before = sliced_trained.get_layer("conv3").kernel.numpy()
    after = result.model.get_layer("conv3").kernel.numpy()
    assert after.shape == before.shape                      # width 1.0: every filter kept
    # one epoch at lr 1e-7 moves a latent weight by far less than 1e-4; a fresh draw is O(0.1)
    moved = np.abs(after - before).max()
    assert (moved < 1e-4) if retrain == "finetune" else (moved > 0.1)


@pytest.mark.parametrize("params, match", [({"slices": []}, "no bit slice kept"),
                                           ({"widths": [0.0]}, "widths"),
                                           ({"retrain": "never"}, "retrain"),
                                           ({"slice_counts": [0, 4]}, "slice_counts"),
                                           ({"slice_counts": [9]}, "slice_counts"),
                                           ({"slices": [7], "slice_counts": [1]},
                                            "not both")])
def test_bad_parameters(params, match):
    with pytest.raises(ModelError, match=match):
        methods.get("cbnn")(**params)


def test_recipe_validates_and_a_tiny_cbnn_pipeline_deploys(tmp_path):
    import json

    from pipelines.recipe import load_recipe, parse_recipe
    from pipelines.runner import run_recipe

    shipped = load_recipe("pipelines/mnist_cbnn.yaml")
    prune = next(s for s in shipped.stages if s.name == "prune")
    assert prune.params["method"] == "cbnn"
    recipe = parse_recipe({
        "name": "cbnn_small", "seed": 0, "data": {"name": "fashion_mnist", "limit": 500},
        "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", {"prune": {"method": "cbnn", "widths": [0.5], "epochs": 1,
                                       "budget": 0.9}},
                   {"evaluate": {"splits": ["test"]}}, {"convert": {"split": "test"}},
                   "report"]})
    run_dir = run_recipe(recipe, tmp_path, log=lambda *a: None)
    convert = json.loads((run_dir / "stages" / "03-convert.json").read_text())
    assert convert["metrics"]["verify"]["argmax_agreement"] == 1.0
    assert "CONV_2D" not in convert["metrics"]["inspect"]["ops"]
    report = (run_dir / "report.md").read_text()
    assert "Pruning: `cbnn`" in report and "raw pixel values 0..255" in report
    assert (run_dir / "bit_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
