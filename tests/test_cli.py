import json
import subprocess
import sys

import pytest
import yaml

from pipelines.cli import main


def test_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"],
                         capture_output=True, text=True, timeout=300).stdout
    for command in ("run", "train", "profile"):
        assert f"    {command}" in out
    assert "Prune binary neural networks" in out


def test_profile_reference_model_and_saved_file(capsys, tmp_path):
    assert main(["profile", "mnist_bnn", "--width", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| layer | kind |") and "| **total** |" in out
    assert main(["train", "--limit", "200", "--epochs", "1", "--width", "0.25",
                 "--out", str(tmp_path / "m.keras")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["profile", str(tmp_path / "m.keras"), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["binary_macs"] > 0


def test_errors_are_one_line_and_exit_2(capsys, tmp_path):
    assert main(["profile", "nonexistent_net"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnnprune: error: 'nonexistent_net' is neither a saved model file")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "training": {"epochs": "ten"}, "stages": ["train"]}))
    assert main(["run", str(bad)]) == 2
    assert "training.epochs: Input should be a valid integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "mnist_bnn", "--input-shape", "28x28"])
    assert "expected e.g. 28,28,1" in capsys.readouterr().err


def test_run_recipe(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "cli", "data": {"name": "digits", "limit": 200},
        "model": {"name": "binary_mlp", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", "report"]}))
    assert main(["run", str(recipe), "--run-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.md").is_file()
    assert "results in" in capsys.readouterr().out
