"""CBNN on Fashion-MNIST (evaluation.md): bit-slice input pruning, a binary first layer.

Arms, all trained from scratch for the same ``--epochs`` (equal budget; the sliced
baseline that the bit-level sensitivity analysis reads is trained as long, once):

- ``baseline``: vgg_small (width 1/4) with its float first conv on [-1, 1] pixels, the
  usual BNN, seeds 0, 1, 2;
- ``cbnn``: the method ``cbnn`` (``bnnprune_tf.methods.cbnn``): sensitivity on
  validation -> kept slices (``--delta``), width factors searched smallest first on
  validation (budget ``--budget`` against the baseline of the same seed), retrained
  from scratch; the chosen configuration is retrained for seeds 1 and 2.

Per final model: test accuracy (once), binary params, LCE flatbuffer bytes; per arm
(architecture, measured on the first seed: the counts do not depend on the weights): C
runtime weight bytes, float CONV_2D in the flatbuffer, LCE host time ratio
(interleaved, one run) and Cortex-M4 instructions per inference (QEMU mps2-an386, exact).

Run: ``python -m benchmarks.cbnn`` (about 25 min on 2 shared cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import bnnprune_tf  # noqa: F401
from bnnprune_tf import bit_sensitivity, data, files, methods, models, profile, training
from bnnprune_tf.methods import cbnn
from bnnprune_tf.reporting import markdown_table
from benchmarks.common import write_results

LR = 1e-2
#: per architecture (equal for every seed of an arm): measured once, on the first seed
CONSTANT = ("weight_bytes_c", "float_conv2d", "bconv2d", "m4_instructions")


def subset(ds: data.Dataset, train: int, val: int) -> data.Dataset:
    """The protocol's split: ``train`` training images, ``val`` other ones for validation
    (both from the official training split, fixed by the loader's seed), official test."""
    return data.Dataset(ds.name, ds.x_train[:train], ds.y_train[:train], ds.x_val[:val],
                        ds.y_val[:val], ds.x_test, ds.y_test, ds.num_classes)


def deployed(model, view: data.Dataset, work: Path, name: str) -> dict:
    """LCE flatbuffer (verified on 200 test images), C export and M4 instruction count."""
    from converters import c_export, lce
    from converters import firmware as fw

    x, y = view.arrays("test", limit=200)
    flatbuffer = lce.convert(model)
    check = lce.verify(model, flatbuffer, x, y)
    ops = lce.inspect(flatbuffer).ops
    info = c_export.write(model, work / name, samples=x[:2], labels=y[:2])
    m4 = fw.count_instructions(work / name, "mps2-an386", build=work / f"build-{name}")
    return {"flatbuffer": flatbuffer, "model_bytes": len(flatbuffer),
            "weight_bytes_c": info["weight_bytes"], "lce_agreement": check.argmax_agreement,
            "float_conv2d": int(ops.get("CONV_2D", 0)), "bconv2d": int(ops.get("LceBconv2d", 0)),
            "m4_instructions": int(np.median(m4))}


def costs(model) -> dict:
    totals = profile.profile(model).to_dict()["totals"]
    return {"binary_params": int(totals["binary_params"]), "binary_macs": int(totals["binary_macs"]),
            "float_macs": int(totals["float_macs"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--val", type=int, default=6000)
    parser.add_argument("--delta", type=float, default=0.005)
    parser.add_argument("--budget", type=float, default=0.01)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.75])
    args = parser.parse_args(argv)
    start = time.time()
    log = lambda m: print(f"[{time.time() - start:6.0f}s] {m}", flush=True)  # noqa: E731
    full = data.load("fashion_mnist", seed=0, val_fraction=0.1)
    ds = subset(full, args.train, args.val)
    pixels = ds.pixels()
    work = Path(tempfile.mkdtemp(prefix="cbnn-bench-"))
    rows, finals, search = [], {}, {}

    baselines = {}
    for seed in args.seeds:
        model = models.build("vgg_small", ds.input_shape, ds.num_classes, width=0.25, seed=seed)
        training.train(model, ds, args.epochs, LR, seed=seed)
        baselines[seed] = model
        log(f"baseline seed {seed}: val {bit_sensitivity.correct(model, *ds.arrays('val'))}")

    seed0 = args.seeds[0]
    method = methods.get("cbnn")(delta=args.delta, budget=args.budget, widths=args.widths,
                                 epochs=args.epochs, learning_rate=LR, base_epochs=args.epochs,
                                 seed=seed0)
    result = method.run(baselines[seed0], methods.Context(ds, epochs=args.epochs,
                                                          learning_rate=LR, seed=seed0, log=log))
    kept, width = result.metrics["slices"], result.metrics["width"]
    search = result.tables["candidates (validation)"]
    finals[seed0] = result.model
    for seed in args.seeds[1:]:               # the chosen configuration, retrained per seed
        tf_model = cbnn.reinitialize(result.model, seed)
        training.train(tf_model, pixels, args.epochs, LR, seed=seed)
        finals[seed] = tf_model
        log(f"cbnn seed {seed} trained")

    from converters import bench

    from converters import lce

    flatbuffers, d0 = {}, {}
    for seed in args.seeds:
        base_test = bit_sensitivity.correct(baselines[seed], *ds.arrays("test"))
        for arm, model, view in (("baseline", baselines[seed], ds),
                                 ("cbnn", finals[seed], pixels)):
            test = base_test if arm == "baseline" else bit_sensitivity.correct(
                model, *view.arrays("test"))
            if seed == seed0:     # instructions depend on the architecture, not the seed
                d = deployed(model, view, work, f"{arm}-{seed}")
                flatbuffers[arm] = d["flatbuffer"]
            else:
                d = {"model_bytes": len(lce.convert(model)),
                     **{k: v for k, v in d0[arm].items() if k in CONSTANT}}
            d0.setdefault(arm, d)
            rows.append({"method": "cbnn", "arm": arm, "seed": seed, "epochs_total": args.epochs,
                         "config": {"slices": kept, "width": width} if arm == "cbnn" else
                         {"first_layer": "float"},
                         **costs(model), "binary_params_dense": costs(baselines[seed])["binary_params"],
                         "val_accuracy": bit_sensitivity.correct(model, *view.arrays("val"))
                         / len(view.y_val),
                         "test_accuracy": test / len(view.y_test),
                         "test_accuracy_dense": base_test / len(ds.y_test),
                         **{k: v for k, v in d.items() if k != "flatbuffer"}})
            log(f"{arm} seed {seed}: test {test}, {rows[-1]['model_bytes']} bytes, "
                f"M4 {rows[-1]['m4_instructions']}")
    files.write_json(work / "rows.json", rows)
    timing = bench.bench_host(flatbuffers, kernels=("default",), runs=300, warmup=20)
    lce_ratio = bench.ratio(bench.find(timing, "cbnn", "default"),
                            bench.find(timing, "baseline", "default"))["ratio"]
    by = {(r["arm"], r["seed"]): r for r in rows}
    for r in rows:
        base = by[("baseline", r["seed"])]
        r["m4_instructions_ratio"] = r["m4_instructions"] / base["m4_instructions"]
        r["lce_time_ratio"] = lce_ratio if r["arm"] == "cbnn" else 1.0
        r["weight_bytes_reduction_c"] = base["weight_bytes_c"] / r["weight_bytes_c"]
    cb = [r for r in rows if r["arm"] == "cbnn"]
    loss = [100 * (r["test_accuracy_dense"] - r["test_accuracy"]) for r in cb]
    summary = [{"method": "cbnn", "arm": "cbnn", "config": {"slices": kept, "width": width},
                "seeds": len(cb),
                "binary_params_reduction": float(np.mean([1 - r["binary_params"] /
                                                          r["binary_params_dense"] for r in cb])),
                "model_bytes_ratio": float(np.mean([by[("baseline", r["seed"])]["model_bytes"]
                                                    / r["model_bytes"] for r in cb])),
                "weight_bytes_ratio_c": float(np.mean([r["weight_bytes_reduction_c"] for r in cb])),
                "test_loss_points": float(np.mean(loss)), "test_loss_points_sd":
                float(np.std(loss, ddof=1)) if len(loss) > 1 else 0.0,
                "lce_time_ratio": lce_ratio,
                "m4_instructions_ratio": float(np.mean([r["m4_instructions_ratio"] for r in cb])),
                "float_conv2d": max(r["float_conv2d"] for r in cb)}]
    sens = result.metrics["sensitivity"]
    table = {f"{r['arm']} seed {r['seed']}": {
        "slices x width": f"{len(kept)} x {width}" if r["arm"] == "cbnn" else "8-bit float first",
        "binary params": r["binary_params"], "LCE bytes": r["model_bytes"],
        "C weight bytes": r["weight_bytes_c"], "float CONV_2D": r["float_conv2d"],
        "test acc": r["test_accuracy"], "M4 instr": r["m4_instructions"],
        "M4 ratio": r["m4_instructions_ratio"]} for r in rows}
    s = summary[0]
    md = "\n".join([
        f"Fashion-MNIST, {args.train} train / {args.val} val / 10,000 test; vgg_small width "
        f"1/4; Adam lr {LR}, cosine, {args.epochs} epochs per arm from scratch (reduced scale "
        f"to fit ~25 min on 2 shared cores); seeds {args.seeds}.", "",
        f"Chosen on validation (delta {args.delta}, budget {args.budget}): kept slices {kept} "
        f"(0 = LSB), width factor {width}.", "",
        f"Summary vs the baseline BNN (float first layer): binary params "
        f"{100 * s['binary_params_reduction']:.1f} % fewer; C runtime weight bytes "
        f"{s['weight_bytes_ratio_c']:.2f}x fewer; LCE flatbuffer bytes baseline / cbnn {s['model_bytes_ratio']:.2f} "
        f"(> 1: smaller); test loss {s['test_loss_points']:+.2f} pt (sd {s['test_loss_points_sd']:.2f}); "
        f"LCE host time ratio {lce_ratio:.3f}; M4 instructions ratio "
        f"{s['m4_instructions_ratio']:.3f}; float CONV_2D in the CBNN flatbuffers: "
        f"{s['float_conv2d']}.", "",
        markdown_table(table, "model"), "",
        "Bit-level sensitivity of the sliced baseline (seed 0, validation):", "",
        bit_sensitivity.BitSensitivity(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in sens.items()}).to_markdown(), "",
        "Width search (seed 0, validation, smallest first, stops at the first within budget):",
        "", markdown_table(search, "candidate")])
    write_results("cbnn", {"protocol": {"data": "fashion_mnist", "train": args.train,
                                        "val": args.val, "model": "vgg_small", "width": 0.25,
                                        "epochs": args.epochs, "learning_rate": LR,
                                        "delta": args.delta, "budget": args.budget,
                                        "widths": args.widths, "seeds": args.seeds},
                           "rows": rows, "summary": summary, "search": search,
                           "sensitivity": sens, "wall_seconds": time.time() - start},
                  md, "python -m benchmarks.cbnn " + " ".join(argv or []))
    log("done")


if __name__ == "__main__":
    main()
