"""ETB (evolution from ternary to binary; a reconstruction) against the dense BNN and
L1 / random filter pruning at equal binary parameters and equal epochs, on Fashion-MNIST.

Protocol (``../shared/reference/evaluation.md``), scaled to the time box: 5,000 training
images (the protocol asks 20,000; on 2 CPU cores shared by five jobs, 20,000 images cost
5 minutes per epoch), 6,000 validation, the official 10,000 test images; ``vgg_small`` at width 1/4
(binary convs 32-32-64-64-128-128 after the float-input first conv, a binary 3x3 "fc1");
Adam, cosine learning rate from 1e-2, batch 128, no augmentation. Every arm gets ``E``
epochs in total:

- dense: ``E`` epochs; its weights after ``E - K`` epochs are kept for the baselines;
- etb at ratio r: ``E`` epochs from scratch with the ETB method (evolution, decision
  after 70 % of the steps, settle), then the zero filters removed, no fine-tuning;
- l1 / random (at 0.46 only, for time): the dense weights after ``E - K`` epochs pruned
  to exactly the widths ETB kept (so equal binary parameters), then ``K`` epochs (cosine
  from the dense schedule's learning rate at that point).

Target ratios 0.30 / 0.46 / 0.60 on seed 0, three seeds (0, 1, 2) at 0.46.
Statistics: paired bootstrap over the pooled test predictions of the seeds (10,000
resamples, two-sided p); "beats" at p < 0.05. LCE: every final model converted
(binary convs counted as ``LceBconv2d``), the seed-0 ETB models timed against the dense
model interleaved in one host run (default kernel). Cortex-M4 (QEMU ``mps2-an386``):
instructions per inference of the bnnprune C runtime, dense vs ETB at 0.46 (seed 0).

The time box forces few epochs (``--epochs``, default 2, ``K`` = 1): the numbers say how
the methods compare at that budget, not at the papers' hundreds of epochs.

Run: ``python -m benchmarks.etb [--epochs 2] [--seeds 0 1 2]`` (46 minutes on 2
shared CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import write_results
from bnnprune_tf import data, files, layer_facts, methods, models, profile, prune, training
from bnnprune_tf.models import copy_model

TRAIN, LR, BATCH, WIDTH, FINETUNE = 5000, 1e-2, 128, 0.25, 1
RATIOS, HEADLINE = (0.30, 0.46, 0.60), 0.46
M4 = "mps2-an386"


def binary_params(model) -> int:
    """Weights of the convs with binary inputs and binary weights."""
    return int(sum(np.prod(layer_facts.latent_kernel(l).shape) for l in model.layers
                   if layer_facts.is_binary_conv(l)))


def dataset(seed: int) -> data.Dataset:
    full = data.load("fashion_mnist", seed=seed)
    return dataclasses.replace(full, x_train=full.x_train[:TRAIN], y_train=full.y_train[:TRAIN])


def predictions(model, ds) -> tuple[np.ndarray, float]:
    x, y = ds.arrays("test")
    correct = model.predict(x, batch_size=512, verbose=0).argmax(1) == y
    x_val, y_val = ds.arrays("val")
    val = float(np.mean(model.predict(x_val, batch_size=512, verbose=0).argmax(1) == y_val))
    return correct, val


def row(arm, config, seed, epochs, model, dense, ds, log) -> dict:
    from converters import lce

    correct, val = predictions(model, ds)
    flatbuffer = lce.convert(model)
    info = lce.inspect(flatbuffer)
    cost, dense_cost = profile.profile(model), profile.profile(dense)
    r = {"method": "etb", "arm": arm, "config": config, "seed": seed, "epochs_total": epochs,
         "binary_macs": int(cost.binary_macs), "binary_macs_dense": int(dense_cost.binary_macs),
         "binary_params": binary_params(model), "binary_params_dense": binary_params(dense),
         "val_accuracy": val, "test_accuracy": float(correct.mean()),
         "test_correct": int(correct.sum()), "model_bytes": len(flatbuffer),
         "lce_binary_convs": info.ops.get("LceBconv2d", 0),
         "binary_convs": sum(layer_facts.is_binary_conv(l) for l in model.layers),
         "_correct": correct, "_model": model}
    log(f"[seed {seed}] {arm} {config}: test {r['test_accuracy']:.4f}, binary params "
        f"{r['binary_params']:,} / {r['binary_params_dense']:,}")
    return r


def run_seed(seed: int, ratios, epochs: int, log) -> list[dict]:
    ds = dataset(seed)

    def build():
        return models.build("vgg_small", ds.input_shape, ds.num_classes, WIDTH, seed=seed)

    dense = build()
    snapshot = {}          # the dense weights after E - K epochs, for the baselines
    keep = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs=None: snapshot.setdefault(
        "model", copy_model(dense)) if e + 1 == epochs - FINETUNE else None)
    training.train(dense, ds, epochs, LR, batch_size=BATCH, seed=seed, callbacks=[keep])
    rows = [row("dense", {}, seed, epochs, dense, dense, ds, log)]
    dense_row = rows[0]
    for ratio in ratios:
        started = time.time()
        method = methods.get("etb")(ratio=ratio, epochs=epochs, learning_rate=LR, control_every=5)
        result = method.run(build(), methods.Context(ds, batch_size=BATCH, seed=seed))
        m = result.metrics
        r = row("etb", {"ratio": ratio}, seed, epochs, result.model, dense, ds, log)
        r.update({k: m[k] for k in ("binary_params_reduction", "controller_error_points",
                                    "feedback_ratio_at_decision", "polarized_at_decision",
                                    "zero_fraction_histograms")},
                 minutes=round((time.time() - started) / 60, 1))
        rows.append(r)
        widths = {name: t["kept"] for name, t in result.tables["kept filters"].items()}
        lr_now = LR * 0.5 * (1 + math.cos(math.pi * (epochs - FINETUNE) / epochs))
        for criterion in ("l1", "random") if ratio == HEADLINE else ():
            masked = prune.prune_filters(copy_model(snapshot["model"]), criterion,
                                         widths=widths, seed=seed)
            training.train(masked, ds, FINETUNE, lr_now, batch_size=BATCH, seed=seed)
            small = prune.strip_pruning(masked)
            rows.append(row(criterion, {"ratio": ratio}, seed, epochs, small, dense, ds, log))
    for r in rows:
        r["test_accuracy_dense"] = dense_row["test_accuracy"]
        r["test_loss_points"] = 100 * (dense_row["test_accuracy"] - r["test_accuracy"])
    return rows


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10000, seed: int = 0) -> dict:
    """Accuracy difference a - b (points) over pooled paired predictions; two-sided p."""
    rng = np.random.default_rng(seed)
    diff = a.astype(np.float64) - b.astype(np.float64)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n)])
    p = 2 * min(np.mean(means <= 0), np.mean(means >= 0))
    return {"difference_points": 100 * float(diff.mean()), "p": float(min(1.0, p)),
            "ci95_points": [100 * float(np.percentile(means, 2.5)),
                            100 * float(np.percentile(means, 97.5))]}


def summarize(rows) -> tuple[list[dict], list[dict]]:
    summary, tests = [], []
    keys = sorted({(r["arm"], r["config"].get("ratio")) for r in rows},
                  key=lambda k: (k[1] or 0, k[0]))
    for arm, ratio in keys:
        group = [r for r in rows if r["arm"] == arm and r["config"].get("ratio") == ratio]
        loss = [r["test_loss_points"] for r in group]
        s = {"method": "etb", "arm": arm, "config": {"ratio": ratio} if ratio else {},
             "seeds": len(group),
             "binary_params_reduction": statistics.mean(1 - r["binary_params"] /
                                                        r["binary_params_dense"] for r in group),
             "binary_macs_reduction": statistics.mean(1 - r["binary_macs"] / r["binary_macs_dense"]
                                                      for r in group),
             "test_accuracy": statistics.mean(r["test_accuracy"] for r in group),
             "test_loss_points": statistics.mean(loss),
             "test_loss_points_sd": statistics.stdev(loss) if len(loss) > 1 else 0.0}
        if arm == "etb":
            s["controller_error_points"] = statistics.mean(
                r["controller_error_points"] for r in group)
            s["beats"], s["ties"], s["loses_to"] = [], [], []
            mine = np.concatenate([r["_correct"] for r in sorted(group, key=lambda r: r["seed"])])
            for other in ("l1", "random", "dense"):
                o = sorted([r for r in rows if r["arm"] == other and
                            r["config"].get("ratio") == (ratio if other != "dense" else None)
                            and r["seed"] in {g["seed"] for g in group}], key=lambda r: r["seed"])
                if len(o) != len(group):
                    continue
                t = {"arm": "etb", "ratio": ratio, "versus": other, "seeds": len(group),
                     **paired_bootstrap(mine, np.concatenate([r["_correct"] for r in o]))}
                tests.append(t)
                verdict = "ties" if t["p"] >= 0.05 else (
                    "beats" if t["difference_points"] > 0 else "loses_to")
                s[verdict].append(other)
        summary.append(s)
    return summary, tests


def speed(rows, log) -> dict:
    """LCE time ratios (seed-0 ETB models / dense, interleaved) and M4 instructions."""
    from converters import bench, c_export
    from converters import firmware as fw

    seed0 = {("dense" if r["arm"] == "dense" else f"{r['arm']} {r['config']['ratio']}"): r
             for r in rows if r["seed"] == 0 and r["arm"] in ("dense", "etb")}
    from converters import lce

    results = bench.bench_host({k: lce.convert(r["_model"]) for k, r in seed0.items()},
                               kernels=("default",), runs=200, warmup=10)
    base = bench.find(results, "dense", "default")
    out = {"lce": {}, "m4": {}}
    for name, r in seed0.items():
        ratio = bench.ratio(bench.find(results, name, "default"), base)
        r["lce_time_ratio"] = ratio["ratio"]
        out["lce"][name] = ratio
        log(f"[lce] {name}: time ratio {ratio['ratio']:.3f}")
    ds = dataset(0)
    x, y = ds.arrays("test", limit=3)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("dense", f"etb {HEADLINE}"):
            directory = Path(tmp) / name.replace(" ", "_")
            c_export.write(seed0[name]["_model"], directory, samples=x, labels=y)
            counts = fw.count_instructions(directory, M4, directory / "build")
            out["m4"][name] = int(statistics.median(counts))
            log(f"[m4] {name}: {out['m4'][name]:,} instructions")
    seed0[f"etb {HEADLINE}"]["m4_instructions_ratio"] = \
        out["m4"][f"etb {HEADLINE}"] / out["m4"]["dense"]
    return out


def markdown(summary, tests, speeds, epochs) -> str:
    lines = [f"Fashion-MNIST, {TRAIN:,} training images, vgg_small width {WIDTH}, {epochs} "
             f"epochs per arm (l1/random: {epochs - FINETUNE} dense + {FINETUNE} after "
             "pruning to ETB's widths). ETB is a reconstruction from the abstract "
             "(bnnprune_tf/methods/ternary_to_binary.py).", "",
             "| arm | target | seeds | binary params removed | test acc | loss vs dense (pt) "
             "| controller error (pt) | beats | ties | loses to |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for s in summary:
        ratio = s["config"].get("ratio")
        lines.append(
            f"| {s['arm']} | {'' if ratio is None else f'{100 * ratio:.0f} %'} | {s['seeds']} | "
            f"{100 * s['binary_params_reduction']:.1f} % | {100 * s['test_accuracy']:.2f} % | "
            f"{s['test_loss_points']:+.2f} ± {s['test_loss_points_sd']:.2f} | "
            + (f"{s['controller_error_points']:+.2f} | " if "controller_error_points" in s
               else " | ")
            + " | ".join(", ".join(s.get(k, [])) for k in ("beats", "ties", "loses_to")) + " |")
    lines += ["", "Paired bootstrap (pooled test predictions of the seeds, 10,000 resamples):", "",
              "| ETB ratio | versus | seeds | difference (pt) | 95 % CI | p |",
              "|---:|---|---:|---:|---|---:|"]
    for t in tests:
        lines.append(f"| {100 * t['ratio']:.0f} % | {t['versus']} | {t['seeds']} | "
                     f"{t['difference_points']:+.2f} | [{t['ci95_points'][0]:+.2f}, "
                     f"{t['ci95_points'][1]:+.2f}] | {t['p']:.3f} |")
    lines += ["", "LCE host time ratio to the dense model (seed 0, interleaved, default kernel): "
              + ", ".join(f"{k} {v['ratio']:.3f}" for k, v in speeds["lce"].items()),
              "", "Cortex-M4 (QEMU mps2-an386, bnnprune C runtime) instructions per inference: "
              + ", ".join(f"{k} {v:,}" for k, v in speeds["m4"].items())]
    return "\n".join(lines)


def run_seed_cached(seed: int, ratios, epochs: int, work: Path, log) -> list[dict]:
    """:func:`run_seed`, its rows kept in ``work`` (models of seed 0 too): a rerun resumes."""
    import pickle

    path = work / f"seed{seed}-e{epochs}.pkl"
    if path.exists():
        rows = pickle.loads(path.read_bytes())
    else:
        rows = run_seed(seed, ratios, epochs, log)
        for i, r in enumerate(rows):
            model = r.pop("_model")
            if seed == 0 and r["arm"] in ("dense", "etb"):
                files.save_model(model, work / f"seed0-e{epochs}-{i}.keras")
        files.write_bytes(path, pickle.dumps(rows))
    for i, r in enumerate(rows):
        if seed == 0 and r["arm"] in ("dense", "etb"):
            r["_model"] = tf.keras.models.load_model(work / f"seed0-e{epochs}-{i}.keras")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark_etb"),
                        help="per-seed results and seed-0 models: a rerun resumes")
    args = parser.parse_args(argv)
    started = time.time()
    rows = []
    for seed in args.seeds:
        ratios = RATIOS if seed == args.seeds[0] else (HEADLINE,)
        rows += run_seed_cached(seed, ratios, args.epochs, args.work, print)
    speeds = speed(rows, print)
    summary, tests = summarize(rows)
    payload = {"protocol": {"data": "fashion_mnist", "train_images": TRAIN, "model": "vgg_small",
                            "width": WIDTH, "epochs": args.epochs, "finetune_epochs": FINETUNE,
                            "batch": BATCH, "learning_rate": LR, "optimizer": "adam",
                            "schedule": "cosine", "seeds": args.seeds, "ratios": list(RATIOS)},
               "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
               "summary": summary, "tests": tests, "speed": speeds,
               "minutes": round((time.time() - started) / 60, 1)}
    write_results("etb", payload, markdown(summary, tests, speeds, args.epochs),
                  f"python -m benchmarks.etb --epochs {args.epochs} --seeds "
                  + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
