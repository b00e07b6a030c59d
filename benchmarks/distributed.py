"""Training speed under tf.distribute on this host: one device vs. ``mirrored`` (2 logical
CPU devices) vs. ``multi_worker`` (2 worker processes over loopback), as ratios of steps per
second; plus every method's state under ``mirrored`` against one device
(``tests/distributed_methods.py``: same widths and masks?) and under ``multi_worker``
(``bnnprune run`` of a train + prune recipe on 2 worker processes against one process: same
widths?).

Each setting runs in its own process (TensorFlow fixes its devices once per process), one
after another; the MNIST BNN trains on mnist5k with the same global batch (64) and seed;
the first epoch (tracing) is not timed, the median step of the others is. On a 2-core
machine no speedup can be expected: 2 replicas share the cores the single run already
uses, so the ratio measures the overhead of splitting batches and all-reducing gradients.

    python benchmarks/distributed.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCHS, BATCH, LIMIT = 4, 64, 1024         # 16 steps per epoch, 3 timed epochs
SETTINGS = ("none", "mirrored", "multi_worker")


def measure(strategy_name: str) -> None:
    """(in a child process) Train and print ``{"step_seconds": [...]}`` as JSON."""
    import bnnprune_tf  # noqa: F401
    import tensorflow as tf

    if strategy_name == "mirrored":
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * 2)
    from benchmarks.common import Timer
    from bnnprune_tf import data, distribute, models, training

    strategy = distribute.strategy(strategy_name, timeout=120)
    ds = data.load("mnist5k", seed=0, limit=LIMIT)
    timer = Timer()
    with strategy.scope():
        model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, seed=0)
        if strategy_name != "none":
            model = distribute.synchronize_batch_norm(model)
        training.train(model, ds, EPOCHS, 1e-2, batch_size=BATCH, seed=0, callbacks=[timer])
    steps_per_epoch = training.steps_per_epoch(ds, BATCH)
    timed = timer.steps[steps_per_epoch:]                 # epoch 1 traces the functions
    print(json.dumps({"step_seconds": timed, "replicas": strategy.num_replicas_in_sync,
                      "chief": distribute.is_chief(strategy)}))


def _env(tf_config: str | None = None) -> dict:
    """This environment for a child process: the project importable, TensorFlow quiet,
    ``TF_CONFIG`` only if given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    return {**env, "TF_CONFIG": tf_config} if tf_config else env


def _child(setting: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--measure", setting], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run_setting(setting: str) -> dict:
    if setting != "multi_worker":
        children = [_child(setting, _env())]
    else:
        from bnnprune_tf.distribute import free_local_ports, local_tf_config

        ports = free_local_ports(2)
        children = [_child(setting, _env(local_tf_config(ports, i))) for i in range(2)]
    outputs = []
    try:
        for child in children:
            stdout, _ = child.communicate(timeout=1200)
            if child.returncode != 0:
                raise SystemExit(f"{setting}: child failed ({child.returncode})")
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    chief = next(o for o in outputs if o["chief"])
    median = statistics.median(chief["step_seconds"])
    return {"setting": setting, "replicas": chief["replicas"], "processes": len(children),
            "timed_steps": len(chief["step_seconds"]), "median_step_seconds": median}


def method_states() -> dict:
    """Every method: single device vs. mirrored (tests/distributed_methods.py)."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_methods.py")],
                          env=_env(), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"tests/distributed_methods.py failed: {done.stderr[-2000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: {"widths_equal": r["single"]["widths"] == r["mirrored"]["widths"],
                   "masks_equal": r["single"]["masks"] == r["mirrored"]["masks"],
                   "single": r["single"]["widths"], "mirrored": r["mirrored"]["widths"]}
            for name, r in results.items()}


def _bnnprune_run(recipe: Path, run_dir: Path, tf_config: str | None = None):
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(recipe),
                             "--run-dir", str(run_dir)], cwd=ROOT, env=_env(tf_config),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _widths(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "stages" / "01-prune.json").read_text())
    return manifest["metrics"]["after"]["widths"]


def multi_worker_states() -> dict:
    """Every method in ``bnnprune run`` (train 1 epoch, then prune) on 2 workers over
    loopback and in one process: the pruned widths."""
    import tempfile

    import yaml
    from bnnprune_tf.distribute import free_local_ports, local_tf_config

    sys.path.insert(0, str(ROOT / "tests"))
    from method_params import PARAMS

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in PARAMS.items():
            prune = {"method": name, "epochs": 1, **params}
            if name == "wff":
                prune.update(iterations=1, accuracy_budget=1.0)
            recipe = {"name": f"mw_{name}", "seed": 0,
                      "data": {"name": "mnist5k", "limit": 64, "batch_size": 32},
                      "model": {"name": "mnist_bnn", "width": 0.25},
                      "training": {"epochs": 1, "learning_rate": 0.05, "optimizer": "sgd",
                                   "schedule": "constant"},
                      "stages": ["train", {"prune": prune}]}
            one, multi = Path(tmp) / f"{name}.yaml", Path(tmp) / f"{name}_mw.yaml"
            one.write_text(yaml.safe_dump(recipe))
            multi.write_text(yaml.safe_dump({**recipe, "distribute": {
                "strategy": "multi_worker", "timeout": 120}}))
            ports = free_local_ports(2)
            workers = [_bnnprune_run(multi, Path(tmp) / f"{name}_mw", local_tf_config(ports, i))
                       for i in range(2)]
            try:
                for worker in workers:
                    _, stderr = worker.communicate(timeout=1200)
                    if worker.returncode != 0:
                        raise SystemExit(f"{name} on 2 workers failed: {stderr[-2000:]}")
            finally:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
            single = _bnnprune_run(one, Path(tmp) / name)
            _, stderr = single.communicate(timeout=1200)
            if single.returncode != 0:
                raise SystemExit(f"{name} in one process failed: {stderr[-2000:]}")
            a, b = _widths(Path(tmp) / name), _widths(Path(tmp) / f"{name}_mw")
            out[name] = {"widths_equal": a == b, "single": a, "multi_worker": b}
    return out


def main() -> None:
    from benchmarks.common import write_results

    rows = [run_setting(s) for s in SETTINGS]
    base = rows[0]["median_step_seconds"]
    for row in rows:
        row["steps_per_second_ratio"] = base / row["median_step_seconds"]
    methods = method_states()
    workers = multi_worker_states()
    table = ("| strategy | replicas | processes | timed steps | steps/s relative to one device |"
             "\n|---|---:|---:|---:|---:|\n" + "\n".join(
                 f"| {r['setting']} | {r['replicas']} | {r['processes']} | {r['timed_steps']} | "
                 f"{r['steps_per_second_ratio']:.2f} |" for r in rows))
    table += ("\n\nMNIST BNN, mnist5k (1,024 training images), global batch 64, epochs 2-4 "
              "timed (median step). This machine has 2 cores: a ratio below 1 is the cost of "
              "splitting each batch over 2 replicas and all-reducing the gradients (and, for "
              "2 workers, gRPC over loopback) on cores the single run already used; a speedup "
              "needs a device or machine per replica.\n\n"
              "| method | widths equal | masks equal | widths one device | widths mirrored |\n"
              "|---|---|---|---|---|\n" + "\n".join(
                  f"| {n} | {m['widths_equal']} | {m['masks_equal']} | {m['single']} | "
                  f"{m['mirrored']} |" for n, m in methods.items()))
    table += ("\n\nMethods: mnist_bnn width 0.25, 64 images, 2 epochs of 2 SGD steps, "
              "2 logical CPUs vs one device, both with global-batch BatchNorm.\n\n"
              "| method | widths equal | widths one process | widths 2 workers |\n"
              "|---|---|---|---|\n" + "\n".join(
                  f"| {n} | {m['widths_equal']} | {m['single']} | {m['multi_worker']} |"
                  for n, m in workers.items()))
    table += ("\n\n`bnnprune run` of a recipe (mnist_bnn width 0.25, 64 images, batch 32: "
              "train 1 epoch, then prune; the method's epochs 1 unless set) on 2 worker "
              "processes over loopback vs. one process.")
    write_results("distributed", {"rows": rows, "methods": methods,
                                  "multi_worker_methods": workers,
                                  "scale": {"epochs": EPOCHS, "batch": BATCH, "limit": LIMIT}},
                  table, "python benchmarks/distributed.py")
    print(table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        measure(sys.argv[2])
    else:
        main()
