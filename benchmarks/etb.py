"""ETB (evolution from ternary to binary; a reconstruction from the abstract,
``bnnprune_tf/methods/ternary_to_binary.py``) by the evaluation protocol
(``../shared/reference/evaluation.md``): ``vgg_small`` width 1/4 at target ratios 30 / 46 / 60 %
and ``resnet18`` width 1/4 at 30 %, against the dense BNN trained as many epochs and against
L1 / random filter pruning at ETB's exact widths.

Every cell is an arena cell (:mod:`benchmarks.arena`, same split, checkpoint, cache and
measurements): ``vgg_small``'s arms are the arena's own, so this benchmark and the arena
share their cells; ``resnet18``'s are the same kinds of arm on ``resnet18`` (its checkpoint
and cells are keyed by the model). So:

- ``etb_rNN``: ETB from the seeded untrained model for E + K epochs at the protocol's lr
  (evolution, decision, settle), the all-zero filters removed, no fine-tuning; its control
  is ``dense_scratch``, trained the same epochs from the same init;
- ``l1_etb_rNN`` / ``random_etb_rNN``: the dense checkpoint (E epochs) pruned by L1 / random
  filter scores to exactly ETB's kept widths of the same seed (equal binary parameters),
  then fine-tuned K epochs at lr/10 (E + K in all); control ``dense_kK``;
- ``uniform_etb_rNN``: ETB's widths trained from scratch for E + K epochs (what the
  architecture ETB found reaches; control ``dense_scratch``);
- ``etb_r46_s50``: ``etb_r46`` deciding at half of training instead of 70 %.

The controller error is the binary parameters removed (integer form, against the control)
minus the target ratio. Headline arms run seeds 0, 1, 2; ``etb_r60`` seed 0.

Run: ``python -m benchmarks.etb [--models vgg_small resnet18] [--seeds 0 1 2] [--epochs 4]
[--lr 0.001] [--cached-only] [--retime] [--restore]`` (the cache makes a rerun resume;
``--cached-only`` reports what is cached so far; ``--retime`` times the cached flatbuffers
against their controls again, for cells timed on a busy machine; ``--restore`` puts the
cells of the committed ``etb.json`` back into an empty cache).
"""

from __future__ import annotations

import argparse
import dataclasses

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)

from benchmarks import arena, protocol
from benchmarks.arena import K, Arm
from benchmarks.common import write_results

R30 = {"ratio": 0.3}
RESNET_ARMS = (
    Arm("etb_r30", "etb", R30, "scratch", "r30", headline=True),
    Arm("l1_etb_r30", "l1", {}, budget="r30", headline=True, match=("etb_r30", "widths")),
    Arm("random_etb_r30", "random", {}, budget="r30", headline=True,
        match=("etb_r30", "widths")),
    Arm("uniform_etb_r30", "l1", {}, "scratch", "r30", headline=True,
        match=("etb_r30", "widths")),
)
MODELS = {    # model -> (Arena model, arms, arm names run)
    "vgg_small": (None, arena.ARMS, ("etb_r30", "etb_r46", "etb_r60", "l1_etb_r30",
                                     "uniform_etb_r30", "l1_etb_r46", "random_etb_r46",
                                     "uniform_etb_r46", "etb_r46_s50")),
    "resnet18": ("resnet18", RESNET_ARMS, tuple(a.name for a in RESNET_ARMS)),
}


def target(summary: dict) -> float | None:
    """The target ratio of an ETB arm's summary (None for the others)."""
    return summary["config"].get("ratio") if summary["method"] == "etb" else None


def table(sums: list[dict]) -> str:
    """One model's summaries as a markdown table."""
    lines = ["| arm | control | seeds | epochs | target | binary params cut | controller error "
             "(points) | binary MACs cut | " + arena.OUTCOME[0],
             "|---|---|---:|---:|---:|---:|---:|---:|" + arena.OUTCOME[1]]
    for s in sums:
        ratio, cut = target(s), s["binary_params_reduction"]
        lines.append(
            f"| {s['arm']} | {s['control']} | {s['seeds']} | {s['epochs_total']} "
            f"| {'' if ratio is None else f'{ratio:.0%}'} | {cut:.1%} "
            f"| {'' if ratio is None else f'{100 * (cut - ratio):+.2f}'} "
            f"| {s['binary_macs_reduction']:.1%} |" + arena.outcome(s))
    return "\n".join(lines)


def markdown(results: dict, args) -> str:
    lines = [f"{protocol.preamble(args.epochs, args.lr)} ETB is a reconstruction from the "
             "paper's abstract. ETB and `dense_scratch` train E + K = "
             f"{args.epochs + K} epochs from the same seeded init at lr {args.lr}; the L1 / "
             f"random arms prune the checkpoint to ETB's widths of the same seed and fine-tune "
             f"{K} epochs at lr/10 (control `dense_k{K}`); `uniform_etb_rNN` trains ETB's "
             "widths from scratch; `etb_r46_s50` decides at half of training (default "
             "70 %). LCE time: arm / control, default kernel, interleaved on the host. M4: "
             "instructions per inference of the bnnprune C runtime under QEMU, arm / "
             "control (the C runtime runs chains only, so none for resnet18). "
             f"{protocol.STATISTICS}", ""]
    for name, (rows, sums) in results.items():
        lines += [f"## {name} width {protocol.SETUP['width']}", "", table(sums), "",
                  "Per seed:", "", protocol.per_seed_table(rows, arena.DEPLOYED), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cached-only", action="store_true",
                        help="report the cells computed so far, train nothing")
    parser.add_argument("--retime", action="store_true",
                        help="time the LCE flatbuffers of the cells again (run it with "
                             "nothing else on the machine)")
    parser.add_argument("--restore", action="store_true", help=arena.RESTORE_HELP)
    args = parser.parse_args(argv)
    if args.restore:
        for name in args.models:
            print(name, arena.restore_results("etb", MODELS[name][0], MODELS[name][1]))
        return
    results = {}
    for name in args.models:
        model, arms, names = MODELS[name]
        bench = arena.Arena(args.epochs, args.lr, cached_only=args.cached_only, model=model,
                            arms=arms)
        rows = arena.run(names, args.seeds, bench)
        if args.retime:
            arena.retime(rows)
        results[name] = (rows, arena.summaries(rows))
    command = ("python -m benchmarks.etb --models " + " ".join(args.models) + " --seeds "
               + " ".join(map(str, args.seeds)) + f" --epochs {args.epochs} --lr {args.lr}"
               + " --cached-only" * args.cached_only + " --retime" * args.retime)
    write_results("etb", {
        "protocol": {**protocol.SETUP, "epochs": args.epochs, "lr": args.lr, "k": K},
        "arms": {name: [dataclasses.asdict(a) for a in MODELS[name][1]
                        if a.name in MODELS[name][2]] for name in args.models},
        "rows": [{**r, "model": name} for name, (rows, _) in results.items() for r in rows],
        "summary": [{**s, "model": name} for name, (_, sums) in results.items() for s in sums]},
        markdown(results, args), command)


if __name__ == "__main__":
    main()
