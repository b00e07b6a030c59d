import json

import pytest

from bnnprune_tf.errors import RecipeError
from pipelines.recipe import load_recipe, parse_recipe
from pipelines.runner import run_recipe


def recipe(stages, **over):
    r = {"name": "p", "seed": 0, "data": {"name": "mnist5k", "limit": 500, "batch_size": 64},
         "model": {"name": "mnist_bnn", "width": 0.5}, "training": {"epochs": 2},
         "stages": stages}
    r.update(over)
    return parse_recipe(r)


def manifest(run_dir, index, name):
    return json.loads((run_dir / "stages" / f"{index:02d}-{name}.json").read_text())


def test_prune_then_shrink_then_convert(tmp_path):
    run_dir = run_recipe(recipe([
        "train",
        {"prune": {"method": "l1", "ratio": 0.5, "round_to": 8, "epochs": 1}},
        "shrink", {"convert": {"split": "val"}}, {"benchmark": {"runs": 3, "warmup": 1}},
        "report"]), tmp_path, log=lambda m: None)
    pruned = manifest(run_dir, 1, "prune")["metrics"]
    assert pruned["before"]["widths"]["conv2"] == 32 and pruned["after"]["widths"]["conv2"] == 16
    assert pruned["after"]["binary_macs"] < 0.5 * pruned["before"]["binary_macs"]
    assert pruned["check"]["argmax_agreement"] == 1.0        # deliverable == masked
    shrunk = manifest(run_dir, 2, "shrink")["metrics"]
    assert shrunk["check"]["argmax_agreement"] == 1.0
    assert shrunk["after"]["binary_macs"] == pruned["after"]["binary_macs"]
    converted = manifest(run_dir, 3, "convert")
    assert converted["outputs"]["tflite"] == "model_shrunk.tflite"
    assert converted["metrics"]["verify"]["argmax_agreement"] == 1.0
    assert converted["metrics"]["binary_convs"] == {"expected": 3, "LceBconv2d": 3}
    bench = manifest(run_dir, 4, "benchmark")["metrics"]
    assert "model_shrunk/default" in bench
    md = (run_dir / "report.md").read_text()
    assert "| conv2 | 32 | 16 |" in md


def test_shipped_pruning_recipes_validate():
    for name in ("mnist_wff", "fashion_mnist_wff"):
        r = load_recipe(f"pipelines/{name}.yaml")
        assert any(s.name == "prune" and s.params["method"] == "wff" for s in r.stages)


def test_prune_params_are_validated():
    with pytest.raises(RecipeError, match="stages\\[1\\].prune.ratio: Input should be less than 1"):
        recipe(["train", {"prune": {"method": "l1", "ratio": 1.5}}])
    with pytest.raises(RecipeError, match="stages\\[1\\].prune.follow_up: Input should be 'finetune'"):
        recipe(["train", {"prune": {"method": "wff", "follow_up": "never"}}])
    with pytest.raises(RecipeError, match="stages\\[1\\].prune.method: unknown or missing method, "
                       "expected one of .*l1, latent, random"):
        recipe(["train", {"prune": {"ratio": 0.5}}])
    with pytest.raises(RecipeError, match="stages\\[1\\].prune: interval \\(5 epochs\\) is longer"):
        recipe(["train", {"prune": {"method": "wff", "interval": 5, "epochs": 4}}])


def test_recipe_is_checked_against_its_model_before_training(tmp_path):
    bad = recipe(["train", {"prune": {"method": "l1", "ratios": {"conv9": 0.5}}}])
    with pytest.raises(RecipeError, match="stages\\[1\\].prune: ratios: no layer 'conv9'.*"
                       "prunable layers: conv2, conv3, conv_first$"):
        run_recipe(bad, tmp_path / "run", log=lambda m: None)
    fixed = recipe(["train", {"prune": {"method": "l1", "widths": {"fc1": 5}}}])
    with pytest.raises(RecipeError, match="layer 'fc1' cannot be pruned"):
        run_recipe(fixed, tmp_path / "run", log=lambda m: None)
    device = recipe(["train", "convert", {"benchmark": {"device": "telnet://pi"}}])
    with pytest.raises(RecipeError, match="stages\\[2\\].benchmark: unknown device 'telnet://pi'"):
        run_recipe(device, tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run").exists()          # nothing written, nothing trained


def test_summary_compares_first_and_last_measurements():
    from pipelines.report import summary

    manifests = [
        {"stage": "train", "metrics": {"profile": {"binary_macs": 100}}},
        {"stage": "evaluate", "metrics": {"test": {"accuracy": 0.9}}},
        {"stage": "prune", "metrics": {"after": {"binary_macs": 70}}},
        {"stage": "shrink", "metrics": {"after": {"binary_macs": 60}}},
        {"stage": "evaluate", "metrics": {"test": {"accuracy": 0.88}}}]
    assert summary(manifests) == {"binary_macs": {"before": 100, "after": 60},
                                  "test_accuracy": {"before": 0.9, "after": 0.88}}
    assert summary(manifests[:2]) == {}                  # nothing pruned, nothing compared
