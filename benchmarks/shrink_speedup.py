"""Does structured pruning turn into LCE speed? Prune 25/50/75 % of filters (L1),
shrink, convert, and time against the unpruned model in the same run.

For the VGG-style (``vgg_small``) and ResNet-style (``resnet18``) reference BNNs
at full width and 32x32x3 input: each ratio with and without ``round_to=32``,
every variant converted with LCE (all binary convs must stay ``LceBconv2d``) and
checked against Keras on random inputs, then all variants of one model timed
round-robin in one process with both bconv kernels. Reported: the ideal speedup
(binary-MAC ratio unpruned / pruned), the measured speedup (median of per-round
time ratios) and their quotient (speedup / ideal; 1 = pruning pays in full).

The models are untrained (L1 of random latent weights picks the filters; latency
does not depend on which) with seeded random BatchNorm statistics. The timings are
the LCE Python interpreter on this x86 host (portable kernels, 1 thread): ratios
only; on aarch64 output channels cost in blocks of 8, which x86 does not show.

Run: ``python -m benchmarks.shrink_speedup [--runs 30]``
"""

from __future__ import annotations

import argparse

import bnnprune_tf  # noqa: F401
import numpy as np

from benchmarks.common import write_results
from benchmarks.lce_latency import randomize_batchnorm
from bnnprune_tf import models, profile, prune
from converters import bench, lce

CASES = [("vgg_small", (32, 32, 3)), ("resnet18", (32, 32, 3))]
RATIOS = (0.25, 0.5, 0.75)


def variants(name: str, shape, seed: int):
    """(label, ratio, round_to, keras model) for the unpruned model and every variant."""
    base = models.build(name, shape, width=1.0, seed=seed)
    randomize_batchnorm(base, seed)
    yield "unpruned", 0.0, None, base
    for ratio in RATIOS:
        for round_to in (None, 32):
            small = prune.strip_pruning(prune.prune_filters(base, "l1", ratio=ratio,
                                                            round_to=round_to))
            yield f"{int(ratio * 100)}% round_to={round_to}", ratio, round_to, small


def run_case(name: str, shape, runs: int, seed: int) -> list[dict]:
    rows, flatbuffers = [], {}
    x = np.random.default_rng(seed).uniform(-1, 1, (32, *shape)).astype("float32")
    for label, ratio, round_to, model in variants(name, shape, seed):
        fb = lce.convert(model)
        info = lce.inspect(fb)
        check = lce.verify(model, fb, x, check=False)
        flatbuffers[label] = fb
        rows.append({"model": name, "variant": label, "ratio": ratio, "round_to": round_to,
                     "widths": prune.kept_widths(model),
                     "binary_macs": profile.profile(model).binary_macs,
                     "flatbuffer_bytes": len(fb), "LceBconv2d": info.ops.get(lce.BINARY_CONV, 0),
                     "argmax_agreement": check.argmax_agreement,
                     "max_abs_diff": check.max_abs_diff})
        print(rows[-1]["variant"], rows[-1]["binary_macs"], rows[-1]["LceBconv2d"], flush=True)
    results = bench.bench_host(flatbuffers, runs=runs, warmup=3, seed=seed)
    base = rows[0]
    for row in rows:
        row["ideal_speedup"] = base["binary_macs"] / row["binary_macs"]
        for kernel in bench.KERNELS:
            r = bench.find(results, row["variant"], kernel)
            row[f"{kernel}_median_ms"] = r.timing.median_us / 1000
            if row is not base:
                rel = bench.ratio(r, bench.find(results, base["variant"], kernel))
                row[f"{kernel}_speedup"] = 1.0 / rel["ratio"]
                row[f"{kernel}_speedup_per_ideal"] = row[f"{kernel}_speedup"] / row["ideal_speedup"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | variant | binary MACs | LceBconv2d | agreement | ideal | default speedup "
             "(/ideal) | indirect speedup (/ideal) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["ratio"] == 0:
            lines.append(f"| {r['model']} | unpruned | {r['binary_macs']:,} | {r['LceBconv2d']} "
                         f"| {r['argmax_agreement']:.2f} | 1.00 | 1.00 | 1.00 |")
            continue
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['binary_macs']:,} | {r['LceBconv2d']} "
            f"| {r['argmax_agreement']:.2f} | {r['ideal_speedup']:.2f} "
            f"| {r['default_speedup']:.2f} ({r['default_speedup_per_ideal']:.2f}) "
            f"| {r['indirect_bgemm_speedup']:.2f} ({r['indirect_bgemm_speedup_per_ideal']:.2f}) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [row for name, shape in CASES for row in run_case(name, shape, args.runs, args.seed)]
    note = ("LCE Python interpreter, x86 host, 1 thread, all variants of a model interleaved "
            "round-robin; speedup = median of per-round time ratios. Agreement: Keras vs LCE "
            "argmax on 32 random inputs of an untrained model with random BatchNorm "
            "statistics (see benchmarks/lce_latency.py on why random BNNs are not held to 100%).")
    write_results("shrink_speedup", {"rows": rows}, note + "\n\n" + markdown(rows),
                  f"python -m benchmarks.shrink_speedup --runs {args.runs} --seed {args.seed}")


if __name__ == "__main__":
    main()
