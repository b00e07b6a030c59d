import json

import pytest

from bnnprune_tf import training
from bnnprune_tf.errors import RecipeError
from pipelines.stages import training as training_stages
from pipelines.recipe import parse_recipe
from pipelines.runner import run_recipe
from test_training import StopAfter


def tiny(epochs=2, **over):
    recipe = {"name": "tiny", "seed": 0,
              "data": {"name": "mnist5k", "limit": 400, "batch_size": 32},
              "model": {"name": "mnist_bnn", "width": 0.25},
              "training": {"epochs": epochs},
              "stages": ["train", {"evaluate": {"splits": ["val", "test"]}}, "report"]}
    recipe.update(over)
    return parse_recipe(recipe)


def test_run_writes_report_and_skips_finished_stages(tmp_path):
    log = []
    run_dir = run_recipe(tiny(), tmp_path / "run", log=log.append)
    for name in ("report.md", "report.json", "training_curves.png", "model.keras",
                 "stages/00-train.json", "stages/01-evaluate.json", "stages/02-report.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((run_dir / "report.json").read_text())
    evaluation = report["stages"][1]["metrics"]
    assert evaluation["test"]["samples"] == 111 and 0 <= evaluation["test"]["accuracy"] <= 1
    assert len(report["stages"][0]["metrics"]["history"]) == 2
    md = (run_dir / "report.md").read_text()
    assert "| test |" in md and "![training curves](training_curves.png)" in md
    assert "| **total** |" in md  # the model profile table

    log.clear()
    run_recipe(tiny(), run_dir, log=log.append)
    assert log == ["[0] train: up to date, skipped", "[1] evaluate: up to date, skipped",
                   "[2] report: up to date, skipped"]

    log.clear()
    changed = tiny(stages=["train", {"evaluate": {"splits": ["test"]}}, "report"])
    run_recipe(changed, run_dir, log=log.append)
    assert log[0] == "[0] train: up to date, skipped"
    assert log[1] == "[1] evaluate: running"        # its parameters changed
    assert "[2] report: running" in log             # and everything after it reruns


def test_interrupted_training_resumes(tmp_path, monkeypatch):
    real_fit = training.fit

    def crashing_fit(*args, **kwargs):
        return real_fit(*args, **{**kwargs, "callbacks": [StopAfter(2)], "verbose": 0})

    monkeypatch.setattr(training_stages.training, "fit", crashing_fit)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(tiny(epochs=3), tmp_path, log=lambda m: None)
    assert not (tmp_path / "stages" / "00-train.json").exists()
    monkeypatch.setattr(training_stages.training, "fit", real_fit)
    run_recipe(tiny(epochs=3), tmp_path, log=lambda m: None)
    manifest = json.loads((tmp_path / "stages" / "00-train.json").read_text())
    assert [h["epoch"] for h in manifest["metrics"]["history"]] == [1, 2, 3]
    rows = (tmp_path / "train" / "history.csv").read_text().splitlines()
    assert len(rows) == 4   # header + 3 epochs: epochs 1-2 from the first attempt


def test_stage_needing_a_model_says_which_stage_to_add(tmp_path):
    with pytest.raises(RecipeError, match="no earlier stage produced a 'model': put a stage"):
        run_recipe(tiny(stages=["evaluate"]), tmp_path, log=lambda m: None)
