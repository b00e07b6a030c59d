"""Latent-weight pruning (ASPDAC 2023) at weight level against random weights and a global
|latent| threshold at equal operations and equal epochs, by the evaluation protocol
(``../shared/reference/evaluation.md``).

Per seed, on the protocol's split (Fashion-MNIST 20k / 6k / 10k) and model (``vgg_small``
width 1/4), from the same dense checkpoint as ``benchmarks/wff.py`` (cached):

- ``latent_w33`` / ``latent_w46``: the method (``methods.get("latent")``, weight level): the
  per-layer sensitivity analysis on the validation split, ratios for the papers' 33 % and 46 %
  operation cuts (``budget`` 0.67 / 0.54), pruned at once, fine-tuned ``--finetune`` K epochs;
- ``random_w33`` / ``random_w46``: seeded random weights at exactly those per-layer ratios;
- ``global_w33`` / ``global_w46``: one |latent| threshold over all layers, removing the same
  operations as the method (the per-layer allocation without a sensitivity analysis);
- ``dense``: the control, fine-tuned K epochs (the same cell as ``benchmarks/wff.py``'s).

Fine-tuning is at lr/10, cosine; ``epochs_total = E + K`` for all. Costs count the nonzero
weights inside kept filters (weight-level pruning leaves ternary weights, which the C runtime
runs and LCE does not). Paired differences to the control of the same seed; McNemar on the
pooled test predictions.

Run: ``python -m benchmarks.latent [--seeds 0 1 2] [--epochs 4] [--finetune 2]``
"""

from __future__ import annotations

import argparse

import bnnprune_tf  # noqa: F401
import numpy as np

from benchmarks import protocol
from benchmarks.common import write_results
from bnnprune_tf import layer_facts, methods, profile, sensitivity
from bnnprune_tf.methods import Context

CUTS = {"w33": 0.33, "w46": 0.46}


def _run(name, params, base, ds, seed, args):
    method = methods.get(name)(level="weight", **params, epochs=args.finetune,
                               learning_rate=args.lr / 10)
    return method.run(base, Context(ds, batch_size=protocol.SETUP["batch_size"], seed=seed,
                                    epochs=args.epochs, learning_rate=args.lr,
                                    log=lambda *_: None))


def global_ratios(base, layers, operations_removed: int) -> dict[str, float]:
    """Per-layer ratios of ONE |latent| threshold over ``layers`` that removes at least
    ``operations_removed`` MACs (a weight costs its layer's MACs per kernel entry)."""
    magnitudes, costs, owners = [], [], []
    for i, name in enumerate(layers):
        layer = base.get_layer(name)
        kernel = np.abs(np.asarray(layer_facts.latent_kernel(layer))).ravel()
        cost = profile.layer_cost(layer)
        per_weight = (cost.binary_macs + cost.ternary_macs + cost.float_macs) / kernel.size
        magnitudes.append(kernel)
        costs.append(np.full(kernel.size, per_weight))
        owners.append(np.full(kernel.size, i))
    order = np.argsort(np.concatenate(magnitudes), kind="stable")
    removed = np.cumsum(np.concatenate(costs)[order])
    n = int(np.searchsorted(removed, operations_removed)) + 1
    counts = np.bincount(np.concatenate(owners)[order[:n]], minlength=len(layers))
    return {name: min(0.99, counts[i] / magnitudes[i].size) for i, name in enumerate(layers)}


def seed_rows(seed: int, args) -> list[dict]:
    ds = protocol.dataset(seed)
    base = protocol.dense(ds, seed, args.epochs, args.lr)
    common = {"bench": "latent", "setup": protocol.SETUP, "epochs": args.epochs, "lr": args.lr,
              "finetune": args.finetune, "seed": seed}
    rows = [protocol.control(ds, base, seed, args.epochs, args.finetune, args.lr / 10)]
    ops_dense = sensitivity.operations(base)

    def row(name, arm, config, result, **extra):
        return {"method": name, "arm": arm, "config": config, "seed": seed,
                "epochs_total": args.epochs + args.finetune,
                **protocol.measure(result.model, ds, result.masked),
                "operations": sensitivity.operations(result.masked), **extra}

    for tag, cut in CUTS.items():
        config = {"operations_cut": cut}

        def latent(tag=tag, config=config, cut=cut):
            result = _run("latent", {"budget": 1 - cut}, base, ds, seed, args)
            return row("latent", f"latent_{tag}", config, result,
                       ratios=result.metrics["ratios"])

        lat = protocol.cell({**common, "arm": f"latent_{tag}", "config": config}, latent)
        rows.append(lat)
        ratios = lat["ratios"]

        def random(tag=tag, ratios=ratios):
            result = _run("random", {"ratios": ratios, "seed": seed}, base, ds, seed, args)
            return row("random", f"random_{tag}", {"ratios": f"latent_{tag}"}, result)

        rows.append(protocol.cell({**common, "arm": f"random_{tag}", "ratios": ratios}, random))
        layers = sorted(ratios)
        removed = ops_dense - lat["operations"]

        def global_threshold(tag=tag, layers=layers, removed=removed):
            masked_ratios = global_ratios(base, layers, removed)
            result = _run("latent", {"ratios": masked_ratios}, base, ds, seed, args)
            return row("latent", f"global_{tag}", {"operations": f"latent_{tag}"}, result,
                       ratios=masked_ratios)

        rows.append(protocol.cell({**common, "arm": f"global_{tag}", "layers": layers,
                                   "removed": int(removed)}, global_threshold))
    return rows


def markdown(rows, summaries, args) -> str:
    lines = [f"{protocol.preamble(args.epochs, args.lr)} Every arm then fine-tunes "
             f"{args.finetune} epoch(s) at lr/10 (the dense control too). Weight level: costs "
             f"count the nonzero weights of kept filters. {protocol.STATISTICS}", "",
             protocol.summary_table(summaries), "", "Per seed:", "",
             protocol.per_seed_table(rows, {"operations": lambda r: r.get("operations", "")}),
             "", "Paper anchor (small BNNs, ASPDAC 2023): 33-46 % fewer operations at no "
             "accuracy loss."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--finetune", type=int, default=2)
    args = parser.parse_args(argv)
    rows = [r for seed in args.seeds for r in seed_rows(seed, args)]
    comparisons = {f"latent_{t}": (f"random_{t}", f"global_{t}") for t in CUTS}
    summaries = protocol.summarize(rows, "dense", comparisons)
    write_results("latent", {"protocol": {**protocol.SETUP, "epochs": args.epochs,
                                          "lr": args.lr, "finetune": args.finetune},
                             "args": vars(args), "rows": rows, "summary": summaries},
                  markdown(rows, summaries, args),
                  "python -m benchmarks.latent --seeds " + " ".join(map(str, args.seeds))
                  + f" --epochs {args.epochs} --lr {args.lr} --finetune {args.finetune}")


if __name__ == "__main__":
    main()
