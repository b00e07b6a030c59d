"""Prune every larq-zoo architecture: binary MACs, params, flatbuffer bytes and LCE speed.

The 14 models of ``larq-zoo==2.4.0`` are built with ``weights=None``,
``num_classes=10``, a seed and the smallest input they accept (:data:`SIZES`, 32x32
unless their strides need more), with random BatchNorm statistics and PReLU slopes
(:func:`randomize`). Each is pruned 50 % at random with ``round_to="lce"`` and
shrunk; the masked and the shrunk model must give the same logits. Both are
converted with LCE; the two flatbuffers of a model are timed interleaved
(round-robin, one process) with both bconv kernels. Reported: binary MACs,
parameters and flatbuffer bytes before/after, binary and float conv ops, the ideal
speedup (binary MACs before / after) and the measured one (median of per-round
time ratios) and their quotient (speedup / ideal).

Timings are the LCE Python interpreter on this x86 host (1 thread, portable
kernels): ratios only, never device latency; with 5 runs on a shared host single
ratios are noisy (QuickNetSmall's 13x). DoReFaNet has 2-bit activations, so LCE has
no binary op for it and its "binary" MACs are 2-bit (ternary) MACs. Unpruned XNORNet
keeps its 6x6x256x4096 binary conv (151 MB of weights) as a float CONV_2D in LCE,
though lint expects it binary; pruned, it becomes an LceBconv2d: its speedup is not
pruning's alone.

Run: ``python -m benchmarks.zoo [--runs 5] [--models QuickNet BiRealNet]``
"""

from __future__ import annotations

import argparse

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import write_results
from bnnprune_tf import profile, prune
from bnnprune_tf.reporting import markdown_table

NAMES = ("QuickNetSmall", "QuickNet", "QuickNetLarge", "RealToBinaryNet", "BinaryDenseNet28",
         "BinaryDenseNet37", "BinaryDenseNet37Dilated", "BinaryDenseNet45", "MeliusNet22",
         "BinaryResNetE18", "BiRealNet", "DoReFaNet", "XNORNet", "BinaryAlexNet")
#: smallest square input each model accepts (its strides and valid convs need more than 32)
SIZES = {"XNORNet": 224, "BinaryAlexNet": 64, "DoReFaNet": 64}


def build(name: str, seed: int = 0) -> tf.keras.Model:
    """larq-zoo model ``name`` (``weights=None``, 10 classes, input :data:`SIZES`), seeded,
    with random BatchNorm statistics and PReLU slopes.

    Example::

        model = build("QuickNetSmall")      # 32x32x3 input
    """
    import larq_zoo

    size = SIZES.get(name, 32)
    tf.keras.utils.set_random_seed(seed)
    factory = getattr(larq_zoo.sota, name, None) or getattr(larq_zoo.literature, name)
    model = factory(input_shape=(size, size, 3), weights=None, num_classes=10)
    randomize(model, seed)
    return model


def randomize(model: tf.keras.Model, seed: int) -> None:
    """Seeded non-trivial BatchNorm statistics (gamma, beta, mean, variance) and PReLU slopes."""
    rng = np.random.default_rng(seed)
    draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 1, n),
            "moving_mean": lambda n: rng.normal(0, 1, n),
            "moving_variance": lambda n: rng.uniform(0.5, 2, n)}
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.set_weights([draw[w.name.split("/")[-1].split(":")[0]](w.shape[0]).astype("float32")
                               for w in layer.weights])
        elif isinstance(layer, tf.keras.layers.PReLU):
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32")
                               for w in layer.get_weights()])


def logits(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` without its final softmax (the zoo models end in one)."""
    last = model.layers[-1]
    if isinstance(last, tf.keras.layers.Softmax) or (
            isinstance(last, tf.keras.layers.Activation)
            and last.activation is tf.keras.activations.softmax):
        return tf.keras.Model(model.inputs, last.input)
    return model


def inputs(model: tf.keras.Model, n: int, seed: int) -> np.ndarray:
    """``n`` seeded uniform [-1, 1] inputs for ``model``."""
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype("float32")


def logit_gap(masked: tf.keras.Model, small: tf.keras.Model, x: np.ndarray) -> tuple[float, bool]:
    """(max |logit difference| / max |logit|, same argmax on every input)."""
    a, b = logits(masked)(x).numpy(), logits(small)(x).numpy()
    return float(np.abs(a - b).max() / np.abs(a).max()), bool((a.argmax(1) == b.argmax(1)).all())


def quantized_macs(cost) -> int:
    """Binary plus 2-bit MACs (DoReFaNet's are all 2-bit)."""
    return cost.binary_macs + cost.ternary_macs


def run_model(name: str, runs: int, seed: int) -> dict:
    from converters import bench, lce

    model = build(name, seed)
    masked = prune.prune_filters(model, "random", ratio=0.5, round_to="lce", seed=seed)
    small = prune.strip_pruning(masked)
    gap, same_argmax = logit_gap(masked, small, inputs(model, 2, seed))
    before, after = profile.profile(model), profile.profile(small)
    row = {"model": name, "input": list(model.input_shape[1:]), "logit_gap": gap,
           "same_argmax": same_argmax,
           "binary_macs": [quantized_macs(before), quantized_macs(after)],
           "params": [model.count_params(), small.count_params()],
           "ideal_speedup": quantized_macs(before) / quantized_macs(after)}
    flatbuffers = {"unpruned": lce.convert(model), "pruned": lce.convert(small)}
    ops = {label: lce.inspect(fb).ops for label, fb in flatbuffers.items()}
    row["flatbuffer_bytes"] = [len(flatbuffers["unpruned"]), len(flatbuffers["pruned"])]
    row["LceBconv2d"] = [ops[k].get(lce.BINARY_CONV, 0) for k in ("unpruned", "pruned")]
    row["CONV_2D"] = [ops[k].get("CONV_2D", 0) for k in ("unpruned", "pruned")]
    results = bench.bench_host(flatbuffers, runs=runs, warmup=1, seed=seed)
    for kernel in bench.KERNELS:
        rel = bench.ratio(bench.find(results, "pruned", kernel),
                          bench.find(results, "unpruned", kernel))
        row[f"{kernel}_speedup"] = 1.0 / rel["ratio"]
        row[f"{kernel}_speedup_per_ideal"] = row[f"{kernel}_speedup"] / row["ideal_speedup"]
    print(name, {k: v for k, v in row.items() if k != "input"}, flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    """Before -> after pairs and speed ratios, one row per model."""
    pair = lambda r, key: f"{r[key][0]:,} -> {r[key][1]:,}"   # noqa: E731
    return markdown_table({r["model"]: {
        "input": f"{r['input'][0]}x{r['input'][1]}", "binary MACs": pair(r, "binary_macs"),
        "params": pair(r, "params"), "flatbuffer bytes": pair(r, "flatbuffer_bytes"),
        "LceBconv2d": pair(r, "LceBconv2d"), "float CONV_2D": pair(r, "CONV_2D"),
        "logit gap": f"{r['logit_gap']:.1e}", "ideal speedup": r["ideal_speedup"],
        "default speedup (/ideal)": f"{r['default_speedup']:.2f} "
                                    f"({r['default_speedup_per_ideal']:.2f})",
        "indirect speedup (/ideal)": f"{r['indirect_bgemm_speedup']:.2f} "
                                     f"({r['indirect_bgemm_speedup_per_ideal']:.2f})",
    } for r in rows}, "model")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(NAMES), choices=NAMES)
    args = parser.parse_args(argv)
    rows = [run_model(name, args.runs, args.seed) for name in args.models]
    note = ("50 % of the channels of every prunable group pruned at random, round_to='lce', "
            "shrunk. LCE Python interpreter, x86 host, 1 thread; the unpruned and pruned "
            "flatbuffers of a model timed interleaved round-robin; speedup = median of "
            "per-round time ratios; ideal = binary MACs before / after (2-bit MACs for "
            "DoReFaNet). Logit gap: max |masked - shrunk| / max |masked| on 2 random inputs.")
    write_results("zoo", {"rows": rows}, note + "\n\n" + markdown(rows),
                  f"python -m benchmarks.zoo --runs {args.runs} --seed {args.seed}")


if __name__ == "__main__":
    main()
