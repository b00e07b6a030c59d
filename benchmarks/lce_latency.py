"""LCE deployment of the reference BNNs: flatbuffer size, op histogram, host latency
with both bconv kernels, and Keras vs LCE agreement.

- ``mnist_bnn`` is trained as in the README recipe (mnist5k, 15 epochs) and
  verified on the whole test split, with both accuracies.
- The other models are untrained: their BatchNorm statistics are set to seeded
  random, non-degenerate values (otherwise an untrained BNN's outputs are integer
  sums that tie exactly), and they are verified on uniform random inputs in
  [-1, 1]. That checks the conversion, not accuracy, and is not held to 100 %:
  a random BNN is chaotic, and the float stem conv (TF and TFLite sum in different
  orders) has pre-activations within 1e-7 of zero, so float rounding can likely
  flip a sign that then changes the output (a hypothesis, not verified). The
  numbers are reported as measured.
- Latency: the LCE Python interpreter on this host, 1 thread, the default and the
  indirect-bgemm kernel interleaved round-robin in one run per model. x86 runs
  portable C++ bconv kernels (no ARM assembly, no XNNPACK for float ops), so only
  ratios measured here mean something, and not for a phone or Raspberry Pi.

Run: ``python -m benchmarks.lce_latency [--runs 30]``
"""

from __future__ import annotations

import argparse

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import write_results
from bnnprune_tf import data, models, training
from converters import bench, lce, lint

CASES = [
    {"model": "mnist_bnn", "input_shape": (28, 28, 1), "width": 1.0, "trained": True},
    {"model": "binary_mlp", "input_shape": (28, 28, 1), "width": 1.0},
    {"model": "binarynet", "input_shape": (32, 32, 3), "width": 1.0},
    {"model": "vgg_small", "input_shape": (32, 32, 3), "width": 1.0},
    {"model": "binary_nin", "input_shape": (32, 32, 3), "width": 1.0},
    {"model": "binary_alexnet", "input_shape": (32, 32, 3), "width": 1.0},
    {"model": "resnet18", "input_shape": (32, 32, 3), "width": 1.0},
]


def randomize_batchnorm(model: tf.keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            values = []
            for w in layer.weights:
                n = w.shape[0]
                kind = w.name.split("/")[-1].split(":")[0]
                values.append({"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 1, n),
                               "moving_mean": rng.normal(0, 3, n),
                               "moving_variance": rng.uniform(1, 20, n)}[kind])
            layer.set_weights([v.astype(np.float32) for v in values])


def prepare(case: dict, seed: int, samples: int):
    """The model and its verification inputs (and labels for the trained one)."""
    tf.keras.utils.set_random_seed(seed)
    if case.get("trained"):
        ds = data.load("mnist5k", seed=seed)
        model = models.build(case["model"], ds.input_shape, ds.num_classes, case["width"])
        training.train(model, ds, 15, 1e-2, seed=seed)
        x, y = ds.arrays("test")
        return model, x, y
    model = models.build(case["model"], case["input_shape"], 10, case["width"])
    randomize_batchnorm(model, seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (samples, *case["input_shape"])).astype(np.float32)
    return model, x, None


def run_case(case: dict, seed: int, runs: int, samples: int) -> dict:
    model, x, y = prepare(case, seed, samples)
    findings = lint.lint(model)
    flatbuffer = lce.convert(model)
    info = lce.inspect(flatbuffer)
    check = lce.verify(model, flatbuffer, x, y, check=bool(case.get("trained")))
    results = bench.bench_host({case["model"]: flatbuffer}, runs=runs, warmup=3, seed=seed)
    default, indirect = results
    return {
        **{k: v for k, v in case.items() if k != "input_shape"},
        "input_shape": list(case["input_shape"]),
        "binary_convs_expected": len(lint.binary_conv_layers(model, findings)),
        "inspect": info.to_dict(),
        "lint": [f.to_dict() for f in findings],
        "verify": check.to_dict(),
        "latency": {r.kernel: r.to_dict(with_samples=True) for r in results},
        "indirect_over_default": bench.ratio(indirect, default),
    }


def markdown(rows: list[dict], runs: int) -> str:
    size = ["| model (width) | flatbuffer B | bit-packed B | float B | LceBconv2d / expected "
            "| other ops |", "|---|---:|---:|---:|---:|---|"]
    speed = ["| model | default median ms (IQR) | indirect median ms (IQR) "
             "| indirect / default (IQR) |", "|---|---:|---:|---:|"]
    agree = ["| model | inputs | samples | argmax agreement | ties | max abs diff "
             "| Keras acc | LCE acc |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        i = r["inspect"]
        other = ", ".join(f"{k} {v}" for k, v in i["ops"].items() if k != "LceBconv2d")
        size.append(f"| {r['model']} ({r['width']}) | {i['total_bytes']:,} | "
                    f"{i['bitpacked_weight_bytes']:,} | {i['float_weight_bytes']:,} | "
                    f"{i['ops'].get('LceBconv2d', 0)} / {r['binary_convs_expected']} | {other} |")
        cells = []
        for kernel in ("default", "indirect_bgemm"):
            s = np.array(r["latency"][kernel]["samples_us"]) / 1e3
            q1, q2, q3 = np.percentile(s, [25, 50, 75])
            cells.append(f"{q2:.3f} ({q1:.3f}-{q3:.3f})")
        rel = r["indirect_over_default"]
        speed.append(f"| {r['model']} | {cells[0]} | {cells[1]} | "
                     f"{rel['ratio']:.3f} ({rel['p25']:.3f}-{rel['p75']:.3f}) |")
        v = r["verify"]
        acc = (lambda a: "" if a is None else f"{a:.4f}")
        agree.append(f"| {r['model']} | {'mnist5k test' if r.get('trained') else 'random'} | "
                     f"{v['samples']} | {v['argmax_agreement']:.4f} | {v['argmax_ties']} | "
                     f"{v['max_abs_diff']:.2g} | {acc(v['keras_accuracy'])} | "
                     f"{acc(v['lce_accuracy'])} |")
    return "\n\n".join([
        "## Flatbuffer (LCE 0.16, target arm)", "\n".join(size),
        f"## Host latency: LCE interpreter, 1 thread, {runs} interleaved runs per kernel",
        "x86 runs portable C++ bconv kernels: compare ratios only, never with device times.",
        "\n".join(speed),
        "## Keras vs LCE",
        "mnist_bnn trained 15 epochs on mnist5k (verified strictly: any disagreement is an "
        "error); the others untrained with random BatchNorm statistics, on uniform random "
        "inputs, reported as measured (not verified as a cause: a random BNN likely amplifies "
        "float rounding in the float stem, whose pre-activations come within 1e-7 of zero, "
        "into a different output).",
        "\n".join(agree)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=100,
                        help="random inputs for the untrained models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for case in CASES:
        rows.append(run_case(case, args.seed, args.runs, args.samples))
        r = rows[-1]
        print(r["model"], r["inspect"]["ops"], r["verify"], r["indirect_over_default"])
    write_results("lce_latency", {"runs": args.runs, "seed": args.seed, "rows": rows},
                  markdown(rows, args.runs),
                  f"python -m benchmarks.lce_latency --runs {args.runs} --samples {args.samples}"
                  f" --seed {args.seed}")


if __name__ == "__main__":
    main()
