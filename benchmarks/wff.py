"""Weight-flipping-frequency pruning (Li & Ren, ISQED 2020) against the baselines at equal
cost and equal epochs, by the evaluation protocol (``../shared/reference/evaluation.md``).

Per seed, on the protocol's split (Fashion-MNIST 20k / 6k / 10k) and model (``vgg_small``
width 1/4), from ONE dense checkpoint trained ``--epochs`` E (Adam, cosine, lr ``--lr``):

- ``wff``: the method's rounds (``methods.get("wff").run``): flips counted over ``--interval``
  I epochs at ``--measure-lr`` (signs sampled every ``--every`` steps), filters with the
  highest flip frequency removed (widths ``(1 - p_l) C_l`` rounded to 8), fine-tuned
  ``--finetune`` F epochs at lr/10, ``--iterations`` rounds; the cheapest round within
  ``--budget`` of its own dense control, judged on validation images;
- ``random``, ``l1``: the same checkpoint pruned to exactly WFF's widths;
- ``uniform``: one L1 ratio for every layer WFF prunes, chosen so the binary MACs come
  closest to WFF's;
- ``latent_channel``: latent-weight channel pruning whose sensitivity budget gives WFF's
  operations (the method's own per-layer allocation);
- ``dense``: the control, fine-tuned like every pruned arm.

WFF's round 0 trains the checkpoint I epochs at ``--measure-lr`` with coupled L2 decay on the
latent weights while it counts; the control and the baselines start from the checkpoint trained
exactly so (:func:`measured`) and fine-tune F x (WFF's chosen round) epochs at lr/10 with the
same decay, as WFF's rounds do: every arm has the same training (``epochs_total = E + I + F x
chosen``) and differs only in what it prunes. Test accuracy is measured once per final model;
paired differences to the dense control of the same seed, McNemar on pooled test predictions
(``benchmarks/protocol.py``). Cells are cached in ``benchmarks/cache/`` (rerun resumes).

Run: ``python -m benchmarks.wff [--seeds 0 1 2] [--epochs 4] [--interval 1] [--finetune 1]``
(``--budget 1`` keeps WFF's last round whatever it costs: the arms then compare at WFF's widths;
``--name`` names the results files).
"""

from __future__ import annotations

import argparse

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks import protocol
from benchmarks.common import RESULTS, write_results
from benchmarks.wff_flips import sign_flip_cost
from bnnprune_tf import files, methods, profile, sensitivity
from bnnprune_tf.methods import flip_frequency
from bnnprune_tf.models import copy_model
from bnnprune_tf.reporting import Figure, render_png
from bnnprune_tf.methods import Context
from bnnprune_tf.prune import kept_widths

ROUND_TO = 8
BASELINES = ("random", "l1", "uniform", "latent_channel")


def _context(ds, seed, args):
    """WFF's ``run`` measures flips at a tenth of the context's learning rate."""
    return Context(ds, batch_size=protocol.SETUP["batch_size"], seed=seed, epochs=args.epochs,
                   learning_rate=10 * args.measure_lr, log=lambda *_: None)


def _row(method, arm, config, seed, args, epochs_after, model, ds, **extra):
    return {"method": method, "arm": arm, "config": config, "seed": seed,
            "epochs_total": args.epochs + epochs_after, **protocol.measure(model, ds), **extra}


def _common(args) -> dict:
    return {"setup": protocol.SETUP, "epochs": args.epochs, "lr": args.lr}


def wff_cell(ds, base, seed, args) -> dict:
    config = {"interval": args.interval, "every": args.every, "measure_lr": args.measure_lr,
              "finetune": args.finetune,
              "iterations": args.iterations, "accuracy_budget": args.budget,
              "weight_decay": args.weight_decay, "round_to": ROUND_TO}

    def compute():
        method = methods.get("wff")(interval=args.interval, every=args.every,
                                    epochs=args.finetune,
                                    learning_rate=args.lr / 10, iterations=args.iterations,
                                    accuracy_budget=args.budget, round_to=ROUND_TO,
                                    weight_decay=args.weight_decay)
        result = method.run(base, _context(ds, seed, args))
        chosen = result.metrics["chosen"]
        rounds = result.metrics["iterations"]
        return _row("wff", "wff", config, seed, args, args.interval + chosen * args.finetune,
                    result.model, ds, chosen_round=chosen, widths=kept_widths(result.model),
                    max_p=[r["max_p"] for r in rounds],
                    p=rounds[0]["p"], pruned=rounds[0]["pruned"])

    return protocol.cell({"bench": "wff", **_common(args), "arm": "wff", "config": config,
                          "seed": seed}, compute)


def measured(ds, base, seed, args) -> tf.keras.Model:
    """The checkpoint after WFF's measuring interval, trained as WFF's round 0 trains it:
    ``base`` + ``--interval`` epochs at ``--measure-lr`` with the latent decay (cached). The
    control and the baselines start from it: every arm gets the same training and differs
    only in what it prunes."""
    return protocol.prelude(ds, base, seed, args.interval, args.measure_lr, args.weight_decay,
                            {"bench": "wff", **_common(args)})


def finetuned(method_name, params, start, ds, seed, epochs, args):
    """``method_name`` with ``params`` on ``start``, then ``epochs`` of fine-tuning at lr/10
    with WFF's latent decay (WFF's rounds fine-tune with it)."""
    cls = protocol.with_decay(methods.get(method_name), args.weight_decay)
    method = cls(**params, epochs=epochs, learning_rate=args.lr / 10)
    return method.run(start, _context(ds, seed, args))


def uniform_ratio(start, layers, target_macs: int) -> float:
    """The one L1 ratio over ``layers`` whose masked binary MACs come closest to ``target``."""
    gaps = {}
    for ratio in np.round(np.arange(0.0, 0.95, 0.02), 2):
        method = methods.get("l1")(ratios={n: float(ratio) for n in layers}, round_to=ROUND_TO)
        masked = method.prepare(start)
        method.apply(masked)
        gaps[float(ratio)] = abs(profile.profile(masked).binary_macs - target_macs)
    return min(gaps, key=gaps.get)


def baseline_cells(ds, base, seed, args, wff_row) -> list[dict]:
    """The control and the baselines from :func:`measured`, fine-tuned as long as WFF's
    chosen round (``epochs_total`` equal for all)."""
    epochs = wff_row["epochs_total"] - args.epochs - args.interval
    start = measured(ds, base, seed, args)
    dense_widths = kept_widths(start)
    widths = {n: w for n, w in wff_row["widths"].items() if w < dense_widths[n]}
    layers = wff_row["pruned"]
    ops_dense = sensitivity.operations(start)
    wff_ops = wff_row["binary_macs"] + wff_row["ternary_macs"] + wff_row["float_macs"]
    rows = []
    key = {"bench": "wff", **_common(args), "start": {
        "interval": args.interval, "measure_lr": args.measure_lr,
        "weight_decay": args.weight_decay}, "seed": seed,
           "finetune_epochs": epochs}
    arms = {"random": ("random", {"widths": widths, "seed": seed}, {"widths": "wff"}),
            "l1": ("l1", {"widths": widths}, {"widths": "wff"})}
    if widths:
        arms["latent_channel"] = ("latent", {"level": "channel", "budget": wff_ops / ops_dense,
                                             "round_to": ROUND_TO}, {"operations": "wff"})

    def control():
        model = flip_frequency.add_latent_decay(copy_model(start), args.weight_decay)
        protocol.train(model, ds, epochs, args.lr / 10, seed)
        return _row("dense", "dense", {}, seed, args, args.interval + epochs, model, ds)

    rows.append(protocol.cell({**key, "arm": "dense"}, control))
    for arm, (name, params, config) in (arms.items() if widths else ()):
        def compute(name=name, params=params, arm=arm, config=config):
            result = finetuned(name, params, start, ds, seed, epochs, args)
            return _row(name, arm, config, seed, args, args.interval + epochs, result.model,
                        ds, widths=kept_widths(result.model))

        rows.append(protocol.cell({**key, "arm": arm, "config": config, "target": params},
                                  compute))
    if widths:
        def uniform():
            ratio = uniform_ratio(start, layers, wff_row["binary_macs"])
            result = finetuned("l1", {"ratios": {n: ratio for n in layers}, "round_to": ROUND_TO},
                               start, ds, seed, epochs, args)
            return _row("l1", "uniform", {"macs": "wff"}, seed, args, args.interval + epochs,
                        result.model, ds, ratio=ratio, widths=kept_widths(result.model))

        rows.append(protocol.cell({**key, "arm": "uniform", "target_macs": wff_row["binary_macs"],
                                   "layers": layers}, uniform))
    return rows


def flip_check(ds, base, seed, args, epochs: int = 3) -> dict:
    """The method's own checks on the checkpoint (methods.md section 1.5), ``epochs`` of
    counting at WFF's measuring rate and decay: ``p_l`` after each epoch of a growing interval, and
    the validation images lost by flipping the signs of the weights that flipped vs. of as
    many that did not (random, per layer)."""
    def compute():
        model = flip_frequency.add_latent_decay(copy_model(base), args.weight_decay)
        tracker = flip_frequency.FlipTracker(last_epochs=epochs, every=args.every)
        curve = []
        record = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs=None: curve.append(
            {n: s.p for n, s in tracker.stats().items()}))
        protocol.train(model, ds, epochs, args.measure_lr, seed, callbacks=[tracker, record])
        flipped = {n: c > 0 for n, c in tracker.counter.counts_numpy().items()}
        lost_flipped, lost_other = sign_flip_cost(model, ds, flipped, np.random.default_rng(seed))
        return {"p_by_interval_epochs": curve,
                "weights_flipped": int(sum(m.sum() for m in flipped.values())),
                "val_images_lost_flipping_flipped": lost_flipped,
                "val_images_lost_flipping_as_many_unflipped": lost_other}

    return protocol.cell({"bench": "wff", "what": "flip_check", **_common(args), "seed": seed,
                          "every": args.every, "measure_lr": args.measure_lr,
                          "weight_decay": args.weight_decay,
                          "epochs_counted": epochs}, compute)


def interval_figure(check: dict) -> Figure:
    curve = check["p_by_interval_epochs"]
    return Figure("p_l against the length of the flip interval (seed 0)", "line",
                  {"p_l": {"x": list(range(1, len(curve) + 1)),
                           "series": {n: [c[n] for c in curve] for n in curve[0]}}},
                  xlabel="interval (epochs)", ylabel="p_l")


def markdown(rows, summaries, args) -> str:
    lines = [f"{protocol.preamble(args.epochs, args.lr)} WFF: interval {args.interval} "
             f"epoch(s) at lr {args.measure_lr} (signs sampled every {args.every} steps), "
             f"fine-tune {args.finetune} epoch(s) at lr/10 per round, {args.iterations} "
             f"round(s), budget {args.budget:.1%} of the validation images, coupled L2 decay "
             f"{args.weight_decay} on latent weights, widths rounded to {ROUND_TO}. The control "
             "and every other arm start from the checkpoint after WFF's measuring interval "
             "(trained as WFF's round 0 trains it) and fine-tune at lr/10 with the same decay "
             f"for as many epochs as WFF's chosen round had (`epochs`). {protocol.STATISTICS}", "",
             protocol.summary_table(summaries), "", "Per seed:", "",
             protocol.per_seed_table(rows, {"widths": lambda r: "/".join(
                 str(w) for w in r.get("widths", {}).values())}),
             "", "Paper anchor (binary NIN / AlexNet on CIFAR-10, 320 epochs): 20-40 % fewer "
             "binary operations at 0.5-1.0 point accuracy loss."]
    return "\n".join(lines)


def check_markdown(check: dict, name: str) -> str:
    last = check["p_by_interval_epochs"][-1]
    return ("\n\nThe method's check (seed 0, " f"{len(check['p_by_interval_epochs'])} epochs "
            f"counted): flipping the signs of the {check['weights_flipped']:,} weights that "
            f"flipped costs {check['val_images_lost_flipping_flipped']} validation images; "
            f"flipping as many that did not costs "
            f"{check['val_images_lost_flipping_as_many_unflipped']}. p_l after the whole "
            "interval: " + ", ".join(f"{n} {p:.3f}" for n, p in last.items())
            + f". p_l against the interval length: `{name}_interval.png`.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--measure-lr", type=float, default=1e-3,
                        help="learning rate while WFF counts flips (round 0)")
    parser.add_argument("--every", type=lambda v: v if v == "epoch" else int(v), default=25,
                        help="sample the signs every N training steps, or once per 'epoch'")
    parser.add_argument("--finetune", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--budget", type=float, default=0.005)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--name", default="wff",
                        help="results/NAME.json, .md and NAME_interval.png")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        ds = protocol.dataset(seed)
        base = protocol.dense(ds, seed, args.epochs, args.lr)
        wff_row = wff_cell(ds, base, seed, args)
        rows += [wff_row, *baseline_cells(ds, base, seed, args, wff_row)]
    summaries = protocol.summarize(rows, "dense", {"wff": BASELINES})
    ds = protocol.dataset(args.seeds[0])
    check = flip_check(ds, protocol.dense(ds, args.seeds[0], args.epochs, args.lr),
                       args.seeds[0], args)
    files.write_bytes(RESULTS / f"{args.name}_interval.png", render_png(interval_figure(check)))
    command = ("python -m benchmarks.wff --seeds " + " ".join(map(str, args.seeds))
               + f" --epochs {args.epochs} --lr {args.lr} --interval {args.interval} "
               f"--every {args.every} --measure-lr {args.measure_lr} --finetune {args.finetune} "
               f"--iterations {args.iterations} "
               f"--budget {args.budget} --weight-decay {args.weight_decay}"
               + (f" --name {args.name}" if args.name != "wff" else ""))
    write_results(args.name, {"protocol": {**protocol.SETUP, "epochs": args.epochs, "lr": args.lr},
                          "args": vars(args), "rows": rows, "summary": summaries,
                          "flip_check": check},
                  markdown(rows, summaries, args) + check_markdown(check, args.name), command)


if __name__ == "__main__":
    main()
