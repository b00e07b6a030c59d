"""Baseline accuracy and training speed of the reference BNNs.

Rows: the README's MNIST BNN on mnist5k (the demo recipe's settings), and a
small VGG-style BNN (``vgg_small`` at width 1/8: 16-16-32-32-64-64 filters) on
the full Fashion-MNIST. Seconds per epoch is the median over epochs 2..N (the
first epoch includes tracing); it is machine-dependent and stated only as a
property of this machine, never compared across runs.

Run: ``python -m benchmarks.baseline [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import statistics

import bnnprune_tf  # noqa: F401

from benchmarks.common import Timer, write_results
from bnnprune_tf import data, models, training

CASES = [
    {"data": "mnist5k", "model": "mnist_bnn", "width": 1.0, "epochs": 15, "batch": 64, "lr": 1e-2},
    {"data": "fashion_mnist", "model": "vgg_small", "width": 0.125, "epochs": 8, "batch": 128,
     "lr": 1e-2},
]


def run_case(case: dict, seed: int) -> dict:
    ds = data.load(case["data"], seed=seed)
    model = models.build(case["model"], ds.input_shape, ds.num_classes, case["width"])
    timer = Timer()
    history = training.train(model, ds, case["epochs"], case["lr"], batch_size=case["batch"],
                             seed=seed, callbacks=[timer])
    test = training.evaluate(model, ds, "test")
    return {**case, "seed": seed, "test_accuracy": test["accuracy"],
            "val_accuracy": history[-1]["val_accuracy"],
            "seconds_per_epoch": statistics.median(timer.epochs[1:]),
            "train_samples": len(ds.y_train), "test_samples": test["samples"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:          # interleave cases within each seed
        for case in CASES:
            rows.append(run_case(case, seed))
            print(rows[-1])
    table = ["| data | model (width) | epochs | seed | test acc | s/epoch |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['data']} | {r['model']} ({r['width']}) | {r['epochs']} | {r['seed']} "
                     f"| {r['test_accuracy']:.4f} | {r['seconds_per_epoch']:.2f} |")
    for case in CASES:
        accs = [r["test_accuracy"] for r in rows if r["model"] == case["model"]]
        table.append(f"| {case['data']} | {case['model']} ({case['width']}) | | mean | "
                     f"{statistics.mean(accs):.4f} | |")
    write_results("baseline", {"rows": rows}, "\n".join(table),
                  "python -m benchmarks.baseline --seeds " + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
