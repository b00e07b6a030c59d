"""The ``bnnprune`` command line.

Examples::

    bnnprune run pipelines/mnist_bnn.yaml            # whole recipe, resumable
    bnnprune train --data mnist5k --model mnist_bnn --epochs 5 --out model.keras
    bnnprune profile model.keras                     # or a reference model name
"""

from __future__ import annotations

import argparse
import json
import sys

import bnnprune_tf  # noqa: F401  (selects Keras 2 before tensorflow loads)
from bnnprune_tf.errors import BnnpruneError


def _run(args):
    from pipelines.runner import run_recipe

    run_dir = run_recipe(args.recipe, run_dir=args.run_dir, force=args.force)
    print(f"results in {run_dir}/ (report.md, report.json, model.keras)")


def _train(args):
    from bnnprune_tf import data, files, models, training

    ds = data.load(args.data, path=args.data_path, seed=args.seed, limit=args.limit)
    model = models.build(args.model, ds.input_shape, ds.num_classes, args.width)
    training.compile_model(model, args.learning_rate,
                           decay_steps=args.epochs * training.steps_per_epoch(ds, args.batch_size))
    training.fit(model, ds, args.epochs, args.batch_size, seed=args.seed)
    result = training.evaluate(model, ds, "test")
    files.save_model(model, args.out)
    print(f"test accuracy {result['accuracy']:.4f} on {result['samples']} samples; "
          f"saved {args.out}")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 28,28,1, got {text!r}") from None


def _profile(args):
    import os

    import tensorflow as tf

    from bnnprune_tf import models, profile
    from bnnprune_tf.errors import ModelError

    if os.path.exists(args.model):
        model = tf.keras.models.load_model(args.model, compile=False)
    elif args.model in models.names():
        model = models.build(args.model, args.input_shape, args.classes, args.width)
    else:
        raise ModelError(f"{args.model!r} is neither a saved model file nor a reference "
                         f"model ({', '.join(models.names())})")
    cost = profile.profile(model)
    print(json.dumps(cost.to_dict(), indent=2) if args.json else cost.to_markdown())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bnnprune",
        description="Prune binary neural networks (Larq) and ship them: "
                    "train, profile and run whole recipes.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a YAML recipe (skips finished stages, resumes training)",
                       description="Run every stage of a YAML recipe in a run directory.")
    r.add_argument("recipe", help="path of the YAML recipe, e.g. pipelines/mnist_bnn.yaml")
    r.add_argument("--run-dir", help="where results go (default: runs/<recipe name>)")
    r.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    r.set_defaults(fn=_run)

    t = sub.add_parser("train", help="train a reference BNN and save it",
                       description="Train a reference BNN on a dataset, print its test "
                                   "accuracy and save it as a .keras file.")
    t.add_argument("--data", default="mnist5k", help="dataset name (default mnist5k)")
    t.add_argument("--data-path", help="directory of the dataset files, if not the default")
    t.add_argument("--limit", type=int, help="use at most this many training samples")
    t.add_argument("--model", default="mnist_bnn", help="reference model (default mnist_bnn)")
    t.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--learning-rate", type=float, default=1e-2,
                   help="initial learning rate of Adam, decayed to 0 by a cosine (default 0.01)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="model.keras", help="output file (default model.keras)")
    t.set_defaults(fn=_train)

    pr = sub.add_parser("profile", help="binary/float MACs, parameters and memory per layer",
                        description="Profile a saved model or a reference model by name.")
    pr.add_argument("model", help="a .keras/.h5 file or a reference model name")
    pr.add_argument("--input-shape", type=_parse_shape, default=(28, 28, 1),
                    help="input shape for a reference model (default 28,28,1)")
    pr.add_argument("--classes", type=int, default=10)
    pr.add_argument("--width", type=float, default=1.0)
    pr.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    pr.set_defaults(fn=_profile)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except BnnpruneError as e:
        print(f"bnnprune: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
