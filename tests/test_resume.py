"""Runs that never lie: exact resume, no stale results, one run per directory.

In-process tests first (fast); then ``bnnprune run`` subprocesses killed with SIGKILL
during training, during a method stage and during convert, whose reruns must give
what an uninterrupted run gives, bit for bit; and two runs of one directory at once.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnnprune_tf import data, models, training
from bnnprune_tf.errors import RecipeError
from pipelines.recipe import parse_recipe
from pipelines.runner import lock, run_recipe
from test_training import StopAfter

ROOT = Path(__file__).resolve().parents[1]


def tiny(stages=("train", "report"), epochs=1, **over) -> dict:
    recipe = {"name": "tiny", "seed": 0,
              "data": {"name": "mnist5k", "limit": 300, "batch_size": 32},
              "model": {"name": "mnist_bnn", "width": 0.25},
              "training": {"epochs": epochs}, "stages": list(stages)}
    recipe.update(over)
    return recipe


def quiet(_):
    pass


# ------------------------------------------------------------------ in process

def test_resumed_fit_equals_uninterrupted_fit(mnist_small, tmp_path):
    """Epoch e's data order is a function of (seed, e): a fit killed after epoch 1 and
    resumed ends with the weights of a fit that was never interrupted."""
    def model():
        m = models.build("mnist_bnn", mnist_small.input_shape, mnist_small.num_classes,
                         width=0.25, seed=0)
        return training.compile_model(m, 1e-2)

    whole = model()
    training.fit(whole, mnist_small, epochs=2, batch_size=64, seed=5, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.fit(model(), mnist_small, epochs=2, batch_size=64, seed=5,
                     work_dir=tmp_path, callbacks=[StopAfter(1)], verbose=0)
    resumed = model()
    training.fit(resumed, mnist_small, epochs=2, batch_size=64, seed=5, work_dir=tmp_path,
                 verbose=0)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_epoch_order_depends_on_seed_and_epoch_only(mnist_small):
    def labels(**kw):
        return np.concatenate([y.numpy() for _, y in mnist_small.batches(
            "train", 64, shuffle=True, augment=("shift", "flip"), **kw)])

    assert np.array_equal(labels(seed=1, epoch=2), labels(seed=1, epoch=2))
    assert not np.array_equal(labels(seed=1, epoch=2), labels(seed=1, epoch=3))
    assert sorted(labels(seed=1, epoch=2)) == sorted(mnist_small.y_train)


def test_a_then_b_then_a_reruns_what_b_overwrote(tmp_path):
    """B shares A's run directory and overwrites report.md; A's report stage must rerun.
    (The directory starts with the stale lock of a dead process, which is taken over.)"""
    a = parse_recipe(tiny(stages=["train", "report"]))
    b = parse_recipe(tiny(stages=["train", {"evaluate": {"splits": ["test"]}}, "report"]))
    (tmp_path / ".lock").write_text("999999999\n")    # a stale lock: no process holds it
    run_recipe(a, tmp_path, log=quiet)
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"     # taken over
    first = (tmp_path / "report.json").read_text()
    run_recipe(b, tmp_path, log=quiet)
    assert "evaluate" in (tmp_path / "report.json").read_text()
    log = []
    run_recipe(a, tmp_path, log=log.append)
    assert log[0] == "[0] train: up to date, skipped"
    assert log[1].startswith("[1] report: report.md, report.json")
    assert "[1] report: running" in log
    again = json.loads((tmp_path / "report.json").read_text())
    assert [s["stage"] for s in again["stages"]] == ["train"]
    assert "evaluate" not in (tmp_path / "report.md").read_text()
    assert again["stages"][0]["metrics"] == json.loads(first)["stages"][0]["metrics"]
    (tmp_path / "model.keras").unlink()       # an artifact deleted: its stage reruns
    log.clear()
    run_recipe(a, tmp_path, log=log.append)
    assert log[:2] == ["[0] train: model.keras changed or missing since it ran",
                       "[0] train: running"]
    assert (tmp_path / "model.keras").is_file()


def test_changed_data_file_is_noticed(tmp_path):
    source = data.source_files("mnist5k")[0]
    rows = gzip.open(source, "rt").read().splitlines()
    copy = tmp_path / "mnist.csv.gz"
    copy.write_bytes(gzip.compress(("\n".join(rows[:1000]) + "\n").encode()))
    recipe = parse_recipe(tiny(stages=["train"], data={"name": "mnist5k", "path": str(copy),
                                                       "batch_size": 32}))
    run = tmp_path / "run"
    run_recipe(recipe, run, log=quiet)
    copy.write_bytes(gzip.compress(("\n".join(rows[:600]) + "\n").encode()))   # cut in place
    log = []
    run_recipe(recipe, run, log=log.append)
    assert log[0] == "[0] train: running"


def test_second_run_of_a_directory_names_the_holder(tmp_path):
    recipe = parse_recipe(tiny())
    with lock(tmp_path):
        with pytest.raises(RecipeError, match=f"in use by process {os.getpid()}.*--run-dir"):
            run_recipe(recipe, tmp_path, log=quiet)
    assert not (tmp_path / "stages").exists()


def test_score_method_fine_tuning_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """l1 pruned once at the start of fine-tuning: a resumed fine-tuning keeps the restored
    masks (it does not prune the half-trained weights again) and ends where an uninterrupted
    one ends."""
    from bnnprune_tf import methods
    from bnnprune_tf.methods import Context, base

    ds = data.load("mnist5k", limit=200)

    def run(work_dir=None):
        model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, width=0.25, seed=0)
        method = methods.get("l1")(ratio=0.5, epochs=2)
        return method.run(model, Context(ds, batch_size=32, work_dir=work_dir))

    whole = run()
    real_train = training.train
    monkeypatch.setattr(base.training, "train", lambda *a, callbacks=(), **k: real_train(
        *a, callbacks=[*callbacks, StopAfter(1)], **k))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    monkeypatch.setattr(base.training, "train", real_train)
    resumed = run(tmp_path)
    assert resumed.metrics["prune_events"] == whole.metrics["prune_events"] == [(0, 1.0)]
    assert resumed.metrics["widths"] == whole.metrics["widths"]
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sensitivity_scan_resumes_after_its_last_finished_layer(tmp_path):
    from bnnprune_tf import sensitivity
    from test_sensitivity import X, Y, known_model, weight_score

    level = sensitivity.WeightLevel(weight_score)
    whole = sensitivity.analyze(known_model(), level, X, Y, progress=False)
    checkpoint = tmp_path / "sensitivity.json"
    calls, real_apply = [], level.apply

    def die_on_dense2(model, ratios, *args):
        calls.append(next(iter(ratios)))
        if calls[-1] == "dense2":
            raise KeyboardInterrupt("killed")
        return real_apply(model, ratios, *args)

    level.apply = die_on_dense2
    with pytest.raises(KeyboardInterrupt):
        sensitivity.analyze(known_model(), level, X, Y, progress=False, checkpoint=checkpoint)
    calls.clear()
    level.apply = lambda model, ratios, *args: calls.append(next(iter(ratios))) or real_apply(
        model, ratios, *args)
    resumed = sensitivity.analyze(known_model(), level, X, Y, progress=False,
                                  checkpoint=checkpoint)
    assert set(calls) == {"dense2"}                 # dense1 came from the checkpoint
    assert resumed.to_dict() == whole.to_dict()


# ------------------------------------------------------------------ killed subprocesses

KILLED_RECIPE = tiny(
    epochs=2, stages=["train", {"prune": {"method": "wff", "interval": 1, "iterations": 1,
                                          "epochs": 1, "accuracy_budget": 1.0}},
                      "convert", "report"],
    data={"name": "mnist5k", "limit": 200, "batch_size": 32})


def _start(recipe_path, run_dir, log):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(recipe_path),
                             "--run-dir", str(run_dir)], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _kill_when(process, ready, what, timeout=300):
    """SIGKILL ``process`` as soon as ``ready()``; fail if it finished first."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"the run finished before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _numbers(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    return [{k: s[k] for k in ("stage", "outputs", "metrics")} for s in report["stages"]]


def _weights(path):
    import tensorflow as tf

    return tf.keras.models.load_model(path).get_weights()


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, capsys):
    """SIGKILL during training, during the WFF stage and during convert; each rerun resumes;
    the end result equals an uninterrupted run's bit for bit. While the first process runs,
    a second run of the same directory is refused, naming it."""
    from pipelines import cli

    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(KILLED_RECIPE))
    whole, killed, log = tmp_path / "whole", tmp_path / "killed", tmp_path / "log.txt"
    assert _start(recipe_path, whole, tmp_path / "whole.txt").wait() == 0, \
        (tmp_path / "whole.txt").read_text()

    run = _start(recipe_path, killed, log)
    lock_file = killed / ".lock"
    deadline = time.time() + 120
    while not (lock_file.exists() and lock_file.read_text().strip() == str(run.pid)):
        assert run.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    assert cli.main(["run", str(recipe_path), "--run-dir", str(killed)]) == 2   # concurrent
    assert f"in use by process {run.pid}" in capsys.readouterr().err
    _kill_when(run, lambda: (killed / "train/backup/chief/checkpoint").exists(), "epoch 1")

    run = _start(recipe_path, killed, log)                 # resumes training at epoch 2
    _kill_when(run, lambda: (killed / "prune/round0/done").exists(), "WFF round 0")

    run = _start(recipe_path, killed, log)                 # resumes WFF at round 1
    _kill_when(run, lambda: "[2] convert: running" in log.read_text(), "convert")

    assert _start(recipe_path, killed, log).wait() == 0, log.read_text()
    text = log.read_text()
    assert "[0] train: up to date, skipped" in text and "[1] prune: up to date, skipped" in text
    assert _numbers(killed) == _numbers(whole)
    for name in ("model.keras", "model_wff.keras"):
        for a, b in zip(_weights(whole / name), _weights(killed / name)):
            np.testing.assert_array_equal(a, b)
    assert (killed / "model_wff.tflite").read_bytes() == (whole / "model_wff.tflite").read_bytes()
