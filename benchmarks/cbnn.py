"""CBNN (bit-slice input pruning with a binary first layer; ``bnnprune_tf/methods/cbnn.py``)
by the evaluation protocol (``../shared/reference/evaluation.md``): ``vgg_small`` width 1/4
on Fashion-MNIST, against the usual BNN with its float first conv.

Every cell is an arena cell (:mod:`benchmarks.arena`: same split, cache and
measurements), so this benchmark and the arena share them. Every arm trains from the
seeded, untrained model for E + K epochs at the protocol's lr; its control is
``dense_scratch``, the usual BNN (float first conv on pixels in [-1, 1]) trained as many
epochs from the same init. Before that, each CBNN arm trains its *sliced baseline* (all 8
slices, real-valued first conv) for ``base_epochs`` = 2 for the bit-level sensitivity
analysis, outside the equal budget. The arms (the arena's ``cbnn_*`` rows, a grid of kept
slices x width factor):

- ``cbnn_w100``: all 8 slices, full width: what the binary first conv alone costs;
- ``cbnn_w75`` / ``cbnn_w50``: the slices the analysis keeps (delta 0.5 point), width
  0.75 / 0.5;
- ``cbnn_w75_s5`` / ``cbnn_w50_s5``: the 5 most significant slices (the count
  ``cbnn_w50_search`` chose on validation for seed 0);
- ``cbnn_w75_s5_sens``: ``cbnn_w75_s5``'s binary MACs spread over the layers by the
  core's per-layer sensitivity (``selector: sensitivity``) instead of uniformly;
- ``cbnn_w50_search``: the number of most significant slices (3 to 8) chosen on
  validation with the binary first conv, width 0.5.

``cbnn_w100``, ``cbnn_w75_s5`` (the validation choice, below) and ``cbnn_w50_search`` run
seeds 0, 1, 2; the others seed 0.

Per arm: kept slices, binary parameters, weight bytes (every constant of the LCE
flatbuffer: bit-packed filters, float weights and the rest) and their ratio to the
control, float ``CONV_2D`` ops left, test loss (points, paired), LCE time and Cortex-M4
instructions (the bnnprune C runtime under QEMU) as ratios to the control. The
configuration chosen on validation is the one with the fewest weight bytes whose seed-0
validation count is within ``--budget`` of the control's (integer counts); the issue's
targets are checked on the table. A per-layer Cortex-M4 profile of the control's
architecture with its float first conv and with a binary one on 8 slices shows what the
input stage costs (:func:`input_stage`). The sensitivity table and ``cbnn_sensitivity.png`` come
from the first CBNN cell of seed 0 that kept its analysis.

Run: ``python -m benchmarks.cbnn [--seeds 0 1 2] [--epochs 4] [--lr 0.001] [--budget 0.01]
[--cached-only] [--retime] [--restore]`` (cells are cached: a rerun resumes;
``--cached-only`` reports what is cached; ``--retime`` times the cached flatbuffers against
their controls again; ``--restore`` puts the cells of the committed ``cbnn.json`` back into
an empty cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np

from benchmarks import arena, common, protocol
from benchmarks.arena import K
from bnnprune_tf import bitslice, files, models
from bnnprune_tf.bit_sensitivity import BitSensitivity
from bnnprune_tf.methods.cbnn import CBNNParams, slice_input
from bnnprune_tf.reporting import markdown_table, render_png

ARMS = tuple(a for a in arena.ARMS if a.method == "cbnn")
#: the issue's targets: weight bytes control / arm, test loss (points), M4 instructions ratio
TARGETS = {"weight_bytes": 3.9, "test_loss_points": 1.0, "m4_instructions_ratio": 0.5}


def summarize(rows: list[dict], budget: float, val_images: int) -> list[dict]:
    """The arena's summaries, each with ``slices``, ``weight_bytes`` (mean),
    ``weight_bytes_ratio`` (control / arm, mean of the seeds' ratios), ``float_conv2d``
    (most over the seeds), its seed-0 ``val_correct`` and ``within_budget`` (the control's
    seed-0 count minus the arm's is at most ``budget`` of the ``val_images``)."""
    controls = {r["seed"]: r for r in rows if r["arm"] == "dense_scratch"}
    allowed = int(np.floor(budget * val_images + 1e-9))
    out = []
    for s in arena.summaries(rows):
        own = [r for r in rows if r["arm"] == s["arm"]]
        first = min(own, key=lambda r: r["seed"])
        ratios = [controls[r["seed"]]["weight_bytes"] / r["weight_bytes"] for r in own
                  if "weight_bytes" in r and "weight_bytes" in controls.get(r["seed"], {})]
        sizes = [r["weight_bytes"] for r in own if "weight_bytes" in r]
        out.append({**s, "slices": first.get("slices"),
                    "weight_bytes": float(np.mean(sizes)) if sizes else None,
                    "weight_bytes_ratio": float(np.mean(ratios)) if ratios else None,
                    "float_conv2d": max(r.get("float_conv2d", 0) for r in own),
                    "val_correct": first["val_correct"],
                    "within_budget": first["seed"] == 0 and
                    controls[0]["val_correct"] - first["val_correct"] <= allowed})
    return out


def chosen(sums: list[dict]) -> dict | None:
    """The CBNN configuration with the fewest weight bytes within the budget (seed 0,
    validation); None if none is."""
    within = [s for s in sums if s["method"] == "cbnn" and s["within_budget"]
              and s["weight_bytes"] is not None]
    return min(within, key=lambda s: s["weight_bytes"]) if within else None


def meets(s: dict) -> dict[str, bool]:
    """Which of the issue's targets the summary ``s`` meets (the cost targets at the
    accuracy target, and the M4 target at any accuracy)."""
    accurate = s["test_loss_points"] <= TARGETS["test_loss_points"]
    fewer_bytes = (s["weight_bytes_ratio"] or 0) >= TARGETS["weight_bytes"]
    fewer_m4 = s.get("m4_instructions_ratio", 1) <= TARGETS["m4_instructions_ratio"]
    return {"weight bytes (at the accuracy)": fewer_bytes and accurate,
            "M4 instructions (at the accuracy)": fewer_m4 and accurate,
            "M4 instructions (at any accuracy)": fewer_m4,
            "no float conv": s["float_conv2d"] == 0}


def table(sums: list[dict]) -> str:
    """The summaries as a markdown table."""
    lines = ["| arm | slices (0 = LSB) | width | seeds | binary params cut | weight bytes "
             "| control / arm | float CONV_2D | val correct (seed 0) | " + arena.OUTCOME[0],
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + arena.OUTCOME[1]]
    for s in sums:
        cbnn, size, ratio = s["method"] == "cbnn", s["weight_bytes"], s["weight_bytes_ratio"]
        lines.append(
            f"| {s['arm']} | {s['slices'] if cbnn else 'float first conv'} "
            f"| {s['config']['widths'][0] if cbnn else 1.0} | {s['seeds']} "
            f"| {s['binary_params_reduction']:.1%} | {'' if size is None else f'{size:,.0f}'} "
            f"| {'' if ratio is None else f'{ratio:.2f}x'} | {s['float_conv2d']} "
            f"| {s['val_correct']} |" + arena.outcome(s))
    return "\n".join(lines)


def sensitivity(rows: list[dict]) -> tuple[str, BitSensitivity] | None:
    """``(arm, analysis)`` of the first seed-0 CBNN row that kept its sensitivity analysis."""
    for arm in ARMS:
        for r in rows:
            if r["arm"] == arm.name and r["seed"] == 0 and "sensitivity" in r:
                return arm.name, BitSensitivity.from_dict(r["sensitivity"])
    return None


def input_stage(ds, seed: int = 0) -> dict[str, dict]:
    """Cortex-M4 instructions (the C runtime under QEMU, per layer) of the control's
    architecture and of the same network reading all 8 bit slices, or the 5 most
    significant, through a binary first conv, all freshly initialised (the counts depend
    on the architecture, not the weights, to within a few dozen instructions): the input
    stage (every layer up to the first conv) against the rest; ``ds``: the protocol's
    split (its classes, one test image)."""
    from converters import c_export
    from converters import firmware as fw

    dense = models.build(protocol.SETUP["model"], ds.input_shape, ds.num_classes,
                         protocol.SETUP["width"], seed=seed)
    (x, y), (pixels, _) = ds.arrays("test", 1), ds.pixels().arrays("test", 1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, samples in (
                ("float first conv", dense, x),
                *((f"{k} slices, binary first conv",
                   slice_input(dense, bitslice.top(k), seed=seed), pixels) for k in (8, 5))):
            work = Path(tmp) / f"m{len(out)}"
            c_export.write(model, work / "model", samples=samples, labels=y)
            found = fw.profile(work / "model", arena.BOARD, work / "build")
            layers = found["layers"]
            first = next(i for i, layer in enumerate(layers) if layer["macs"]) + 1
            stage = sum(layer["instructions"] for layer in layers[:first])
            out[name] = {"input stage": " + ".join(layer["op"] for layer in layers[:first]),
                         "its MACs": sum(layer["macs"] for layer in layers[:first]),
                         "its M4 instructions": stage,
                         "rest of the network": found["total"] - stage,
                         "total": found["total"]}
    return out


def markdown(rows: list[dict], sums: list[dict], stage: dict, pick: dict | None,
             found: tuple[str, BitSensitivity] | None, args) -> str:
    met: dict[str, list[str]] = {}
    for s in sums:
        for target, ok in (meets(s).items() if s["method"] == "cbnn" else ()):
            met.setdefault(target, []).extend([f"`{s['arm']}`"] if ok else [])
    lines = [
        f"{protocol.preamble(args.epochs, args.lr)} Every arm trains E + K = {args.epochs + K} "
        f"epochs from the same seeded init at lr {args.lr}; the control `dense_scratch` is the "
        "usual BNN, its first conv float on pixels in [-1, 1]. The CBNN arms read raw pixels "
        "through their kept bit slices with a binary first conv; each first trains its sliced "
        "baseline (8 slices, real-valued first conv) 2 epochs for the sensitivity analysis "
        "(outside the equal budget). Weight bytes: every constant of the LCE flatbuffer. LCE "
        "time: arm / control, default kernel, interleaved on the host. M4: instructions per "
        "inference of the bnnprune C runtime under QEMU, arm / control. "
        f"{protocol.STATISTICS}", "",
        f"Chosen on validation (fewest weight bytes within {args.budget:.0%} of the "
        "control's seed-0 validation count): "
        + (f"`{pick['arm']}` (slices {pick['slices']}, width {pick['config']['widths'][0]})."
           if pick else "none is within the budget."), "",
        f"Targets (issue #14): >= {TARGETS['weight_bytes']}x fewer weight bytes at <= "
        f"{TARGETS['test_loss_points']:g} point mean test loss and >= "
        f"{1 / TARGETS['m4_instructions_ratio']:g}x fewer M4 instructions (at that accuracy, "
        "and at any); no float conv. "
        "Met by: " + "; ".join(f"{t}: {', '.join(arms) or 'no arm'}" for t, arms in met.items())
        + ".",
        ""]
    missing = arena.not_run(rows, ARMS, args.seeds)
    if missing:
        lines += [f"Not run yet ({len(missing)}): {', '.join(missing)}.", ""]
    lines += [table(sums), "", "Per seed:", "", protocol.per_seed_table(rows, {
            "slices": lambda r: r.get("slices", ""),
            "weight bytes": lambda r: f"{r['weight_bytes']:,}" if "weight_bytes" in r else "",
            "float CONV_2D": lambda r: r.get("float_conv2d", ""), **arena.DEPLOYED}), ""]
    lines += ["Where the input stage's instructions go (Cortex-M4, the C runtime, one "
              "inference, untrained models of the control's architecture):", "",
              markdown_table(stage, "architecture"), ""]
    if found:
        arm, analysis = found
        lines += [f"Bit-level sensitivity of the sliced baseline (`{arm}`, seed 0, "
                  f"{analysis.samples} validation images; `cbnn_sensitivity.png`):", "",
                  analysis.to_markdown(), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--budget", type=float, default=0.01,
                        help="validation accuracy drop allowed for the chosen configuration")
    parser.add_argument("--cached-only", action="store_true",
                        help="report the cells computed so far, train nothing")
    parser.add_argument("--retime", action="store_true",
                        help="time the LCE flatbuffers of the cells again (run it with "
                             "nothing else on the machine)")
    parser.add_argument("--restore", action="store_true", help=arena.RESTORE_HELP)
    args = parser.parse_args(argv)
    if args.restore:
        print(arena.restore_results("cbnn", arms=ARMS))
        return
    bench = arena.Arena(args.epochs, args.lr, cached_only=args.cached_only, arms=ARMS)
    rows = arena.run([a.name for a in ARMS], args.seeds, bench)
    if args.retime:
        arena.retime(rows)
    ds = protocol.dataset(0)
    sums = summarize(rows, args.budget, len(ds.y_val))
    stage, pick, found = input_stage(ds), chosen(sums), sensitivity(rows)
    if found:
        files.write_bytes(common.RESULTS / "cbnn_sensitivity.png",
                          render_png(found[1].figure(CBNNParams().delta)))
    command = ("python -m benchmarks.cbnn --seeds " + " ".join(map(str, args.seeds))
               + f" --epochs {args.epochs} --lr {args.lr} --budget {args.budget}"
               + " --cached-only" * args.cached_only + " --retime" * args.retime)
    common.write_results("cbnn", {
        "protocol": {**protocol.SETUP, "epochs": args.epochs, "lr": args.lr, "k": K,
                     "budget": args.budget},
        "arms": [dataclasses.asdict(a) for a in ARMS], "targets": TARGETS,
        "chosen": (pick or {}).get("arm"), "rows": rows, "summary": sums,
        "sensitivity": found[1].to_dict() if found else None, "input_stage": stage},
        markdown(rows, sums, stage, pick, found, args), command)


if __name__ == "__main__":
    main()
