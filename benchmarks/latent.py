"""Latent-weight pruning (ASPDAC 2023) on Fashion-MNIST against random and WFF at equal BOPs.

Setup, per seed: ``mnist_bnn`` at width 0.5 (16-32-64 filters, a 3x3 "fc1" conv), trained
for 8 epochs on the first 12,000 Fashion-MNIST training images (the 6,000 validation and
10,000 test images are complete), flips counted over the last 3 epochs for WFF. The
reference is the trained model fine-tuned like every pruned one (2 epochs, lr 1e-3 cosine),
so "accuracy loss" never credits pruning with extra training.

For each granularity (weight = unstructured, channel = structured) the latent-weight
sensitivity analysis runs once (2,000 validation images, ratios 0.1..0.9, no retraining);
each epsilon of ``EPSILONS`` gives per-layer ratios ``r_l``. At exactly those ratios (equal
operations: same kept weights or channels per layer) three scores prune a fresh copy:
latent magnitude, seeded random, and WFF (flip counts: per weight at weight level, the
published filter criterion at channel level), each then fine-tuned with masks fixed.
Operations = MACs (binary + float) on unmasked weights. "Reduction at <= X point" is the
largest mean reduction over the epsilons whose mean test-accuracy loss (3 seeds) is <= X.
LCE latency: structured latent models of seed 0, shrunk and converted, timed with the dense
model in one interleaved host run (ratios only; x86 runs LCE's portable kernels).

Run: ``python -m benchmarks.latent [--seeds 0 1 2]`` (about 20 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import bnnprune_tf  # noqa: F401
import numpy as np

from benchmarks.common import write_results
from bnnprune_tf import data, masks, models, select, sensitivity, training
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.methods import flip_frequency as wff
from bnnprune_tf.methods import latent_weight as lw
from bnnprune_tf.shrink import shrink

TRAIN_SAMPLES, WIDTH, EPOCHS, FLIP_EPOCHS, BATCH, LR = 12000, 0.5, 8, 3, 128, 1e-2
FT_EPOCHS, FT_LR, EVAL_SAMPLES = 2, 1e-3, 2000
EPSILONS = (0.0, 0.005, 0.01, 0.02, 0.05)
CRITERIA = ("latent", "random", "wff")
THRESHOLDS = (0.1, 0.5)         # accuracy loss in points


def weight_level(criterion: str, counter, seed: int) -> sensitivity.WeightLevel:
    if criterion == "latent":
        return lw.level("weight")
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return sensitivity.WeightLevel(lambda layer: rng.random(layer.weight_mask.shape))
    counts = counter.counts_numpy()      # WFF per weight: fewer flips = keep; |latent| breaks ties
    return sensitivity.WeightLevel(
        lambda layer: -counts[layer.name] + lw.latent_magnitude(layer) / 2)


def channel_level(criterion: str, counter, seed: int) -> sensitivity.ChannelLevel:
    if criterion == "latent":
        return lw.level("channel")
    if criterion == "random":
        return sensitivity.ChannelLevel(select.random_scores(seed))
    return sensitivity.ChannelLevel(wff.flip_criterion(counter))


def finetune(masked, ds, seed: int) -> float:
    training.train(masked, ds, FT_EPOCHS, FT_LR, batch_size=BATCH, seed=seed)
    return training.evaluate(masked, ds, "test")["accuracy"]


def run_seed(seed: int, log) -> dict:
    full = data.load("fashion_mnist", seed=seed)
    ds = dataclasses.replace(full, x_train=full.x_train[:TRAIN_SAMPLES],
                             y_train=full.y_train[:TRAIN_SAMPLES])
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, WIDTH)
    tracker = wff.FlipTracker(last_epochs=FLIP_EPOCHS)
    training.train(model, ds, EPOCHS, LR, batch_size=BATCH, seed=seed, callbacks=[tracker])
    trained_acc = training.evaluate(model, ds, "test")["accuracy"]
    dense = masks.prunable(model)
    dense_ops = sensitivity.operations(dense)
    reference = finetune(dense, ds, seed)
    log(f"[seed {seed}] trained {trained_acc:.4f}, fine-tuned reference {reference:.4f}, "
        f"{dense_ops:,} operations")
    x_val, y_val = ds.arrays("val", limit=EVAL_SAMPLES)
    out = {"seed": seed, "trained_accuracy": trained_acc, "reference_accuracy": reference,
           "dense_operations": dense_ops, "sensitivity": {}, "rows": [], "structured": {}}
    for granularity, make in (("weight", weight_level), ("channel", channel_level)):
        analysis = sensitivity.analyze(masks.prunable(model), lw.level(granularity),
                                       x_val, y_val, progress=False)
        out["sensitivity"][granularity] = analysis.to_dict()
        done: list[tuple[dict, list[dict]]] = []      # (ratios, their rows)
        for eps in EPSILONS:
            ratios = analysis.ratios_within(eps)
            same = next((rows for r, rows in done if r == ratios), None)
            if same is not None:           # same ratios as a smaller epsilon: same result
                out["rows"] += [{**row, "epsilon": eps, "same_as_epsilon": row["epsilon"]}
                                for row in same]
                continue
            done.append((ratios, []))
            for criterion in CRITERIA:
                masked = masks.prunable(model)
                graph = ChannelGraph(masked)
                make(criterion, tracker.counter, seed).apply(masked, ratios, graph)
                if granularity == "weight":
                    graph.apply_masks(masked, select.keep_nonempty(graph, masked))
                ops = sensitivity.operations(masked)
                acc = finetune(masked, ds, seed)
                row = {"seed": seed, "granularity": granularity, "epsilon": eps,
                       "criterion": criterion, "ratios": ratios, "operations": ops,
                       "reduction": 1 - ops / dense_ops, "test_accuracy": acc,
                       "loss_points": 100 * (reference - acc)}
                out["rows"].append(row)
                done[-1][1].append(row)
                log(f"[seed {seed}] {granularity} eps {eps} {criterion}: "
                    f"-{100 * row['reduction']:.1f} % ops, loss {row['loss_points']:+.2f} pt")
                if granularity == "channel" and criterion == "latent":
                    out["structured"][eps] = shrink(masked)
    out["dense_model"] = shrink(dense)
    return out


def latency(result: dict, log) -> list[dict]:
    """Interleaved LCE host timing of the dense and the structured latent models (one seed)."""
    from converters import bench, lce

    full = data.load("fashion_mnist", seed=result["seed"])
    x, y = full.arrays("test", limit=200)
    candidates = {"dense": result["dense_model"],
                  **{f"latent eps {eps}": m for eps, m in result["structured"].items()}}
    flatbuffers = {}
    for name, model in candidates.items():
        flatbuffers[name] = lce.convert(model)
        lce.verify(model, flatbuffers[name], x, y)
    results = bench.bench_host(flatbuffers, kernels=("default",), runs=500, warmup=20)
    base = bench.find(results, "dense", "default")
    rows = []
    for name in flatbuffers:
        r = bench.find(results, name, "default")
        rows.append({"model": name, "bytes": len(flatbuffers[name]),
                     "operations": sensitivity.operations(candidates[name]),
                     **{k: v for k, v in bench.ratio(r, base).items()}})
        log(f"[latency] {name}: ratio {rows[-1]['ratio']:.3f}")
    return rows


def summarize(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per (granularity, epsilon, criterion) means over seeds; best reduction per threshold."""
    keys = sorted({(r["granularity"], r["epsilon"], r["criterion"]) for r in rows},
                  key=lambda k: (k[0] != "weight", k[1], CRITERIA.index(k[2])))
    means = []
    for g, eps, c in keys:
        group = [r for r in rows if (r["granularity"], r["epsilon"], r["criterion"]) == (g, eps, c)]
        means.append({"granularity": g, "epsilon": eps, "criterion": c, "seeds": len(group),
                      "reduction": statistics.mean(r["reduction"] for r in group),
                      "loss_points": statistics.mean(r["loss_points"] for r in group),
                      "loss_points_per_seed": [round(r["loss_points"], 2) for r in group]})
    best = []
    for g in ("weight", "channel"):
        for c in CRITERIA:
            for threshold in THRESHOLDS:
                ok = [m for m in means if m["granularity"] == g and m["criterion"] == c
                      and m["loss_points"] <= threshold]
                top = max(ok, key=lambda m: m["reduction"], default=None)
                best.append({"granularity": g, "criterion": c, "max_loss_points": threshold,
                             "reduction": top["reduction"] if top else 0.0,
                             "epsilon": top["epsilon"] if top else None,
                             "loss_points": top["loss_points"] if top else None})
    return means, best


def markdown(best, means, seeds, latency_rows) -> str:
    lines = [f"Reference (dense, fine-tuned like the pruned models) test accuracy: "
             f"{100 * statistics.mean(s['reference_accuracy'] for s in seeds):.2f} % (mean of "
             f"{len(seeds)} seeds); {TRAIN_SAMPLES:,} training images, {EPOCHS} epochs.", "",
             "Operation-count reduction (MACs on unmasked weights) at a mean test-accuracy "
             "loss of at most 0.1 / 0.5 point; paper anchor: 33-46 % fewer operations with "
             "no accuracy loss.", "",
             "| granularity | score | reduction at <= 0.1 pt (eps, loss) | reduction at <= 0.5 pt "
             "(eps, loss) |", "|---|---|---:|---:|"]
    for g in ("weight", "channel"):
        for c in CRITERIA:
            cells = []
            for t in THRESHOLDS:
                b = next(x for x in best if (x["granularity"], x["criterion"],
                                             x["max_loss_points"]) == (g, c, t))
                cells.append(f"{100 * b['reduction']:.1f} % ({b['epsilon']}, "
                             f"{b['loss_points']:+.2f})" if b["epsilon"] is not None else "none")
            lines.append(f"| {g} | {c} | " + " | ".join(cells) + " |")
    lines += ["", "All configurations (mean over seeds; same per-layer ratios for the three "
              "scores at an epsilon; an epsilon giving the same ratios as a smaller one "
              "repeats its result):", "",
              "| granularity | epsilon | score | ops reduction | loss (pt) | loss per seed |",
              "|---|---:|---|---:|---:|---|"]
    for m in means:
        lines.append(f"| {m['granularity']} | {m['epsilon']} | {m['criterion']} | "
                     f"{100 * m['reduction']:.1f} % | {m['loss_points']:+.2f} | "
                     f"{m['loss_points_per_seed']} |")
    lines += ["", "LCE host latency of the structured latent models (seed 0), relative to the "
              "dense model, one interleaved run (median of per-round ratios, p25-p75):", "",
              "| model | operations | flatbuffer bytes | time ratio |", "|---|---:|---:|---:|"]
    for r in latency_rows:
        lines.append(f"| {r['model']} | {r['operations']:,} | {r['bytes']:,} | "
                     f"{r['ratio']:.3f} ({r['p25']:.3f}-{r['p75']:.3f}) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    started = time.time()
    results = [run_seed(seed, print) for seed in args.seeds]
    latency_rows = latency(results[0], print)
    rows = [r for res in results for r in res["rows"]]
    means, best = summarize(rows)
    payload = {
        "setup": {"data": "fashion_mnist", "train_samples": TRAIN_SAMPLES, "model": "mnist_bnn",
                  "width": WIDTH, "epochs": EPOCHS, "flip_epochs": FLIP_EPOCHS, "batch": BATCH,
                  "learning_rate": LR, "finetune_epochs": FT_EPOCHS, "finetune_lr": FT_LR,
                  "sensitivity_samples": EVAL_SAMPLES, "epsilons": list(EPSILONS),
                  "grid": list(sensitivity.DEFAULT_GRID)},
        "best": best, "means": means, "latency": latency_rows,
        "seeds": [{k: v for k, v in res.items() if k not in ("structured", "dense_model")}
                  for res in results],
        "minutes": round((time.time() - started) / 60, 1),
    }
    write_results("latent", payload, markdown(best, means, results, latency_rows),
                  "python -m benchmarks.latent --seeds " + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
