"""Where LCE departs from Keras, chain vs. residual BNN: :func:`converters.lce.divergence`
on the protocol's dense checkpoints (``vgg_small`` and ``resnet18`` at width 1/4, E epochs,
seeds 0-2; ``../shared/reference/evaluation.md``), over the first test images.

For every binary conv: the largest difference of its float input between Keras and LCE,
that input's scale, and how many of its values change sign (each one a flipped binary
input). In ``vgg_small`` every sign reads a BatchNorm of an integer sum, whose threshold
:func:`converters.lce.convert` centers between two integers; in ``resnet18`` the signs
read float residual sums, which Keras and LCE round differently.

Run: ``python -m benchmarks.lce_residual [--images 1000]`` (the checkpoints come from
the arena's cache, or are trained).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)

from benchmarks import protocol
from benchmarks.common import write_results
from converters import lce

MODELS = ("vgg_small", "resnet18")
SEEDS = (0, 1, 2)
E, LR = 4, 1e-3          # the arena's checkpoint (its runs: --epochs 4 --lr 0.001)


def measure(model_name: str, seed: int, images: int) -> tuple[list[dict], dict]:
    """The divergence rows and the whole-model verification of one checkpoint."""
    ds = protocol.dataset(seed)
    model = protocol.dense(ds, seed, E, LR, model=model_name)
    x = ds.x_test[:images].astype(np.float32)
    rows = [{"model": model_name, "seed": seed, **r}
            for r in lce.divergence(model, x, stop_at_first_flip=False)]
    check = lce.verify(model, lce.convert(model), x, ds.y_test[:images], check=False)
    flipped = [r for r in rows if r["sign_flips"]]
    summary = {"model": model_name, "seed": seed, "images": images,
               "binary_convs": len(rows),
               "first_flip": flipped[0]["layer"] if flipped else None,
               "first_flip_flips": flipped[0]["sign_flips"] if flipped else 0,
               "first_flip_largest": flipped[0]["largest_flipped"] if flipped else None,
               "sign_flips": sum(r["sign_flips"] for r in rows),
               "largest_scale": max(r["scale"] for r in rows),
               "argmax_agreement": check.argmax_agreement,
               "max_abs_diff": check.max_abs_diff}
    return rows, summary


def _small(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def markdown(rows: list[dict], summary: list[dict]) -> str:
    lines = [f"The protocol's dense checkpoints ({E} epochs, lr {LR}, "
             f"width {protocol.SETUP['width']}); {summary[0]['images']} test images. A sign "
             "flip is a value of a binary conv's float input whose sign differs between "
             "Keras and LCE, each cut (the model up to that conv's input) converted on its "
             "own; flips after the first are mostly the first's consequences. The whole "
             "model's columns compare its own conversion with Keras.", "",
             "| model | seed | binary convs | first flipped | its flips | their largest "
             "\\|Keras value\\| | sign flips (all cuts) | largest input scale | whole model: "
             "argmax agreement | whole model: max output diff |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['seed']} | {s['binary_convs']} | "
                     f"{s['first_flip'] or '-'} | {s['first_flip_flips']} | "
                     f"{_small(s['first_flip_largest'])} | {s['sign_flips']:,} | "
                     f"{s['largest_scale']:.1f} | {s['argmax_agreement']:.3f} | "
                     f"{s['max_abs_diff']:.3g} |")
    lines += ["", "Per binary conv (its input: max \\|Keras - LCE\\|, scale, sign flips, "
              "largest \\|Keras value\\| flipped):", "",
              "| model | seed | layer | max diff | scale | sign flips | largest flipped |",
              "|---|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['seed']} | {r['layer']} | {r['max_abs_diff']:.3g} | "
              f"{r['scale']:.1f} | {r['sign_flips']:,} | {_small(r['largest_flipped'])} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args(argv)
    rows, summary = [], []
    for model_name in MODELS:
        for seed in SEEDS:
            r, s = measure(model_name, seed, args.images)
            rows += r
            summary.append(s)
            print(s, flush=True)
    command = "python -m benchmarks.lce_residual " + " ".join(argv or sys.argv[1:])
    write_results("lce_residual", {"protocol": {**protocol.SETUP, "epochs": E, "lr": LR},
                                   "rows": rows, "summary": summary},
                  markdown(rows, summary), command.strip())


if __name__ == "__main__":
    main()
