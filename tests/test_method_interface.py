"""The method interface: registry, a toy method registered here (the README's example)
through the Python API, a user's own compile/fit and the recipe runner; every
registered method in plain user-written training code."""

import json

import numpy as np
import pytest
import tensorflow as tf
from pydantic import Field

from bnnprune_tf import masks, methods, models, profile
from bnnprune_tf.errors import ModelError, RecipeError
from bnnprune_tf.layer_facts import latent_kernel
from bnnprune_tf.prune import kept_widths


class SettledParams(methods.ScoreParams):
    penalty: float = Field(1e-4, ge=0)


@methods.register("settled")
class Settled(methods.ScorePruning):
    """Filters whose latent weights sit closest to the sign boundary go."""

    Params = SettledParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.history: list[float] = []

    def filter_scores(self, layer):
        k = np.abs(np.asarray(latent_kernel(layer)))
        return k.reshape(-1, k.shape[-1]).mean(axis=0)

    def loss(self, model):
        kernels = [latent_kernel(l) for l in model.layers if hasattr(l, "latent_kernel")]
        return lambda: self.params.penalty * tf.add_n([tf.reduce_mean(tf.abs(k)) for k in kernels])

    def callbacks(self):
        record = tf.keras.callbacks.LambdaCallback()          # mean |latent| after each epoch
        record.on_epoch_end = lambda epoch, logs=None: self.history.append(float(np.mean(
            [np.abs(latent_kernel(l)).mean() for l in record.model.layers
             if hasattr(l, "latent_kernel")])))
        return [*super().callbacks(), record]   # the pruner's callback sets the masks

    def finalize(self, model):
        result = super().finalize(model)
        result.tables["mean |latent| per epoch"] = {str(i + 1): {"mean |latent|": v}
                                                    for i, v in enumerate(self.history)}
        return result


def small_model(seed=0):
    return models.build("mnist_bnn", (28, 28, 1), 10, width=0.25, seed=seed)


def user_data(ds, n=256):
    x, y = ds.arrays("train", limit=n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def test_registry_lists_gets_and_refuses_clearly():
    assert {"l1", "random", "wff", "latent", "settled"} <= set(methods.names())
    assert methods.get("settled") is Settled and Settled.name == "settled"
    with pytest.raises(ModelError, match="unknown pruning method 'nope': use one of"):
        methods.get("nope")
    with pytest.raises(ModelError, match="registered already"):
        methods.register("l1")(Settled)
    with pytest.raises(ModelError, match="subclass of methods.Method"):
        methods.register("thing")(object)
    with pytest.raises(ModelError, match="invalid parameters for method 'settled': penalty"):
        Settled(ratio=0.5, penalty=-1)


def test_toy_method_through_the_python_api(mnist_small):
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    result = Settled(ratio=0.5, epochs=1, penalty=1e-3).run(model, methods.Context(mnist_small))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))   # untouched
    assert not masks.has_masks(result.model)
    assert kept_widths(result.model)["conv2"] == kept_widths(model)["conv2"] // 2
    assert profile.profile(result.model).binary_macs < 0.5 * profile.profile(model).binary_macs
    assert len(result.masked.losses) == 1                                  # the loss term
    assert list(result.tables["mean |latent| per epoch"]) == ["1"]
    x = mnist_small.arrays("val", limit=64)[0]
    np.testing.assert_allclose(result.model.predict(x, verbose=0),
                               result.masked.predict(x, verbose=0), atol=1e-5)


def test_toy_method_in_a_users_own_fit(mnist_small):
    method = methods.get("settled")(ratio=0.5, round_to=4)
    masked = method.prepare(small_model())
    masked.compile(tf.keras.optimizers.SGD(0.05),
                   tf.keras.losses.SparseCategoricalCrossentropy(), ["accuracy"])
    x, y = mnist_small.arrays("train", limit=128)
    history = masked.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=method.callbacks())
    assert len(method.history) == 2 and len(history.history["loss"]) == 2
    assert kept_widths(masked)["conv2"] == 8            # 16 -> 8, pruned at the first step
    result = method.finalize(masked)
    assert result.model.get_layer("conv2").filters == 8


def test_toy_method_in_a_recipe_end_to_end(tmp_path):
    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    def recipe(prune):
        return parse_recipe({
            "name": "toy", "seed": 0, "data": {"name": "mnist5k", "limit": 400},
            "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
            "stages": ["train", {"prune": prune}, {"convert": {"split": "val"}}, "report"]})

    with pytest.raises(RecipeError, match=r"stages\[1\].prune.penalty: Input should be greater"):
        recipe({"method": "settled", "ratio": 0.5, "penalty": -1})
    run_dir = run_recipe(recipe({"method": "settled", "ratio": 0.5, "penalty": 1e-5,
                                 "epochs": 1}), tmp_path, log=lambda m: None)
    pruned = json.loads((run_dir / "stages" / "01-prune.json").read_text())
    assert pruned["outputs"]["model"] == "model_settled.keras"
    assert pruned["metrics"]["after"]["binary_macs"] < pruned["metrics"]["before"]["binary_macs"]
    assert pruned["metrics"]["check"]["argmax_agreement"] == 1.0
    converted = json.loads((run_dir / "stages" / "02-convert.json").read_text())["metrics"]
    assert converted["binary_convs"]["LceBconv2d"] == converted["binary_convs"]["expected"] == 3
    assert "mean |latent| per epoch" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("name, params", [
    ("l1", {"ratio": 0.5}),
    ("random", {"ratio": 0.5, "seed": 3}),
    ("latent", {"level": "channel", "ratios": {"conv2": 0.5, "conv3": 0.5}}),
    ("latent", {"level": "weight", "epsilon": 0.5, "grid": [0.25, 0.5]}),
    ("wff", {"interval": 1, "threshold": 0, "epochs": 1, "weight_decay": 1e-3}),
])
def test_every_method_works_in_plain_user_code(name, params, mnist_small):
    model = small_model(seed=1)
    method = methods.get(name)(params)
    masked = method.prepare(model, validation_data=mnist_small.arrays("val", limit=100))
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(user_data(mnist_small), epochs=2, verbose=0, callbacks=method.callbacks())
    result = method.finalize(masked)
    x = mnist_small.arrays("test", limit=64)[0]
    np.testing.assert_allclose(result.model.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-5)
    cost = profile.profile(result.model)
    if name == "latent" and params["level"] == "weight":
        assert masks.has_masks(result.model)           # ternary weights stay
        assert result.metrics["after"]["operations"] < result.metrics["before"]["operations"]
    elif name == "wff":
        assert all(after <= before for before, after in result.metrics["widths"].values())
        assert len(masked.losses) == 1                    # the latent decay term
    else:
        assert cost.binary_macs < profile.profile(model).binary_macs
    assert not masks.has_masks(model)


def test_weight_level_ratios_may_name_the_classifier_channel_level_may_not():
    """At weight level the classifier's kernel entries are prunable (its channels are not):
    the per-layer ratios a weight-level sensitivity scan returns can be handed to another
    method."""
    model = models.build("mnist_bnn", (28, 28, 1), seed=0, width=0.25)
    method = methods.get("random")(level="weight", ratios={"fc1": 0.5, "conv2": 0.5})
    masked = method.prepare(model)
    method.apply(masked)
    kernel_mask = np.asarray(masked.get_layer("fc1").weight_mask)
    assert kernel_mask.mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ModelError, match="layer 'fc1' cannot be pruned"):
        methods.get("random")(level="channel", ratios={"fc1": 0.5}).prepare(model)
