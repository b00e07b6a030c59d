"""tf.distribute: the recipe's ``distribute`` field, TF_CONFIG errors, every method's state
under MirroredStrategy (2 logical CPUs, in a subprocess: TensorFlow fixes its devices once
per process) and a 2-worker MultiWorkerMirroredStrategy run of ``bnnprune run``."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf
import yaml

from bnnprune_tf import distribute, files, models
from bnnprune_tf.methods.base import copy_masked
from bnnprune_tf.errors import DistributeError, RecipeError
from pipelines.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny_mw", "seed": 0, "data": {"name": "mnist5k", "limit": 64, "batch_size": 32},
        "model": {"name": "mnist_bnn", "width": 0.25},
        "training": {"epochs": 2, "learning_rate": 0.05, "optimizer": "sgd",
                     "schedule": "constant"},
        "stages": ["train", {"prune": {"method": "l1", "ratio": 0.5, "epochs": 0}}, "report"]}


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": os.fspath(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _bnnprune_run(recipe: Path, run_dir: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", os.fspath(recipe),
                             "--run-dir", os.fspath(run_dir)], cwd=recipe.parent,
                            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(processes, seconds: float) -> list[tuple[int, str, str]]:
    """Wait for all; kill every one still running after ``seconds`` (then fail)."""
    deadline = time.time() + seconds
    out = []
    try:
        for p in processes:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.time()))
            out.append((p.returncode, stdout, stderr))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def test_recipe_field_and_tf_config_errors(tmp_path):
    recipe = parse_recipe({**TINY, "distribute": {"strategy": "mirrored"}})
    assert recipe.distribute.strategy == "mirrored"
    with pytest.raises(RecipeError, match=r"distribute.strategy"):
        parse_recipe({**TINY, "distribute": {"strategy": "tpu"}})
    with pytest.raises(DistributeError, match="needs the environment variable TF_CONFIG"):
        distribute.check_tf_config({})
    with pytest.raises(DistributeError, match="TF_CONFIG is not valid"):
        distribute.check_tf_config({"TF_CONFIG": "{cluster"})
    bad_task = json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                           "task": {"type": "worker", "index": 2}})
    with pytest.raises(DistributeError, match="is not in the cluster"):
        distribute.check_tf_config({"TF_CONFIG": bad_task})
    # a recipe asking for multi_worker without TF_CONFIG fails before any file is written
    from pipelines.runner import run_recipe

    env = os.environ.pop("TF_CONFIG", None)
    try:
        with pytest.raises(DistributeError, match="TF_CONFIG"):
            run_recipe(parse_recipe({**TINY, "distribute": {"strategy": "multi_worker"}}),
                       tmp_path / "run")
    finally:
        if env is not None:
            os.environ["TF_CONFIG"] = env
    assert not (tmp_path / "run").exists()
    assert distribute.is_chief(distribute.strategy("none"))


def test_parsing_any_method_starts_no_tensorflow():
    """``bnnprune run`` parses the recipe's stages before it builds the strategy, and
    MultiWorkerMirroredStrategy must configure TensorFlow before TensorFlow starts: a
    method that made a variable when built (ETB did) broke every multi_worker run."""
    code = """if True:
        import bnnprune_tf
        from tensorflow.python.eager import context
        from bnnprune_tf import methods
        from pipelines.recipe import parse_recipe, stage_params
        from method_params import PARAMS
        assert sorted(PARAMS) == sorted(methods.names()), methods.names()
        recipe = {"name": "all", "data": {"name": "mnist5k"}, "model": {"name": "mnist_bnn"},
                  "stages": ["train", *({"prune": {"method": m, **p}} for m, p in PARAMS.items())]}
        stage_params(parse_recipe(recipe))
        print(context.context()._context_handle is None)
    """
    done = subprocess.run([sys.executable, "-c", code], env=_env(PYTHONPATH=os.pathsep.join(
        [os.fspath(ROOT), os.fspath(ROOT / "tests")])), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"]


def test_synchronized_batch_norm_survives_copies_and_saving(tmp_path):
    """tf-keras leaves ``synchronized`` out of BatchNormalization's config, so a clone
    (every method's masked copy, ETB's quantizer swap) went back to per-replica
    statistics: ETB under 2 replicas then trained another network."""
    model = distribute.synchronize_batch_norm(models.build("mnist_bnn", (28, 28, 1), seed=0))
    path = tmp_path / "m.keras"
    files.save_model(model, path)
    copies = {"clone": tf.keras.models.clone_model(model), "masked": copy_masked(model),
              "loaded": tf.keras.models.load_model(path)}
    for name, copy in copies.items():
        norms = [l for l in copy.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
        assert len(norms) == 4 and all(l.synchronized for l in norms), name


def test_mirrored_method_state_matches_one_device():
    """2 replicas, same global batch and seed: the same masks and widths; flips sampled
    once per epoch (not per replica), SBNN's lambda from the global loss (per-replica
    state would be half or double), ETB's thresholds and decisions (a network with
    per-replica BatchNorm statistics ends with other channels)."""
    done = subprocess.run([sys.executable, os.fspath(ROOT / "tests" / "distributed_methods.py"),
                           "wff", "sbnn", "etb"], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, runs in results.items():
        one, two = runs["single"], runs["mirrored"]
        assert one["widths"] == two["widths"], name
        assert one["masks"] == two["masks"], name
    etb = results["etb"]                       # it prunes here: 4, 13, 27 of 8, 16, 32
    assert etb["single"]["widths"] != {"conv_first": 8, "conv2": 16, "conv3": 32, "fc1": 10}
    wff = results["wff"]
    assert wff["single"]["samples"] == wff["mirrored"]["samples"] == 2
    for layer, counts in wff["single"]["flips"].items():
        a, b = np.array(counts), np.array(wff["mirrored"]["flips"][layer])
        assert a.sum() == b.sum(), layer
        # a flip is a latent weight crossing 0: float rounding of the summed gradients may
        # move a crossing to a neighbour, never change the count by a replica factor
        assert (a != b).mean() <= 0.01, layer
    rows = [(r1, r2) for r1, r2 in zip(results["sbnn"]["single"]["log"],
                                       results["sbnn"]["mirrored"]["log"])]
    assert len(rows) == 2
    for r1, r2 in rows:
        assert r2["p_hat"] == pytest.approx(r1["p_hat"], abs=0.005)
        assert r2["lambda"] == pytest.approx(r1["lambda"], rel=0.1)
        assert r2["loss"] == pytest.approx(r1["loss"], rel=0.05)


def _start_workers(recipe: Path, run_dir: Path) -> list[subprocess.Popen]:
    ports = distribute.free_local_ports(2)
    return [_bnnprune_run(recipe, run_dir, TF_CONFIG=distribute.local_tf_config(ports, i)) for i in range(2)]


def test_multi_worker_equals_one_process_and_resumes_after_a_lost_worker(tmp_path):
    """``bnnprune run`` on 2 workers over loopback: both finish, only the chief writes the
    report, and the pruned network equals the one-process run's up to float rounding (same
    kept channels, binary weights). Then worker 1 is killed in the prune stage's
    fine-tuning: worker 0 stops with the error within the heartbeat bound, and the
    relaunched pair skips training, resumes the fine-tuning from its backup and ends with
    the uninterrupted run's weights bit for bit."""
    from bnnprune_tf import models, prune, training
    from pipelines.runner import run_recipe

    l1 = {"prune": {"method": "l1", "ratio": 0.5, "epochs": 3, "learning_rate": 0.01}}
    recipe = {**TINY, "data": {**TINY["data"], "limit": 512},
              "training": {**TINY["training"], "epochs": 1}, "stages": ["train", l1, "report"]}
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump({**recipe, "distribute": {"strategy": "multi_worker",
                                                              "timeout": 60}}))
    results = _finish(_start_workers(multi, tmp_path / "run"), 500)
    # the one-process reference afterwards: beside the workers it starves them on 2 cores
    run_recipe(parse_recipe({**recipe, "stages": recipe["stages"][:2]}), tmp_path / "one",
               log=lambda line: None)
    assert [code for code, _, _ in results] == [0, 0], [e[-3000:] for _, _, e in results]
    assert "[2] report: on the chief only" in results[1][1]
    assert (tmp_path / "run" / "report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.yaml", "one", "run"]
    whole = models.load(tmp_path / "run" / "model_l1.keras")
    b = models.load(tmp_path / "one" / "model_l1.keras")
    assert prune.kept_widths(whole) == prune.kept_widths(b)
    assert prune.kept_widths(whole)["conv3"] < 32
    for la, lb in zip(whole.layers, b.layers):
        if la.name.startswith(("conv", "fc")) and not la.name.endswith("_bn"):
            # float rounding of the summed gradients may carry a latent weight near 0
            # across it: a few signs, never a layer's worth
            differ = np.sign(la.get_weights()[0]) != np.sign(lb.get_weights()[0])
            assert differ.mean() <= 0.01, la.name

    killed = tmp_path / "killed"
    backup = killed / "prune" / "backup"
    chief, worker = _start_workers(multi, killed)
    try:
        deadline = time.time() + 300
        while not (backup / "chief" / "checkpoint").exists():
            assert chief.poll() is None and worker.poll() is None, "stopped before epoch 1"
            assert time.time() < deadline, "no fine-tuning epoch 1 within 300 s"
            time.sleep(0.05)
        worker.kill()
        lost = time.time()
        (code, _, stderr), = _finish([chief], 200)
        waited = time.time() - lost
    finally:
        _finish([chief, worker], 1)
    assert code == 2, stderr[-3000:]
    assert "a worker of the multi_worker run stopped or cannot be reached" in stderr
    assert "relaunch every worker" in stderr
    assert waited < 60 + 30, waited             # the collective timeout, the heartbeat
    assert (killed / "stages" / "00-train.json").exists()
    assert not (killed / "stages" / "01-prune.json").exists()
    assert training.resumed_epoch(backup) in (1, 2)

    relaunched = _finish(_start_workers(multi, killed), 500)
    assert [code for code, _, _ in relaunched] == [0, 0], [e[-3000:] for _, _, e in relaunched]
    assert "[0] train: up to date, skipped" in relaunched[0][1]
    for _, stdout, _ in relaunched:      # both skip training and resume the fine-tuning
        assert "[0] train: running" not in stdout and "[1] prune: running" in stdout
    manifest = json.loads((killed / "stages" / "01-prune.json").read_text())
    assert [row["epoch"] for row in manifest["metrics"]["history"]] == [1, 2, 3]  # no rerun
    for name in ("model.keras", "model_l1.keras"):
        for a, b in zip(models.load(tmp_path / "run" / name).get_weights(),
                        models.load(killed / name).get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_unreachable_worker_is_an_error_within_the_timeout(tmp_path):
    recipe = tmp_path / "multi.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "distribute": {"strategy": "multi_worker",
                                                             "timeout": 3}}))
    started = time.time()
    ports = distribute.free_local_ports(2)
    (code, _, stderr), = _finish([_bnnprune_run(recipe, tmp_path / "run",
                                                TF_CONFIG=distribute.local_tf_config(ports, 1))], 120)
    assert code == 2, stderr[-2000:]
    assert "bnnprune: error: not all workers answered within 3 s" in stderr
    assert time.time() - started < 60
