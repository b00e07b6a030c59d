"""The ``bnnprune`` command line.

Examples::

    bnnprune run pipelines/mnist_bnn.yaml            # whole recipe, resumable
    bnnprune train --data mnist5k --model mnist_bnn --epochs 5 --out model.keras
    bnnprune profile model.keras                     # or a reference model name
    bnnprune convert model.keras --out model.tflite --data mnist5k
    bnnprune bench model.tflite --vs pruned.tflite   # or --device ssh://pi@host
    bnnprune firmware build model.keras --data mnist5k --out build/model --board mps2-an386
    bnnprune firmware run build/model --board mps3-an547   # QEMU; or --board host

An error is one line ``bnnprune: error: <what is wrong and how to fix it>`` and exit code 2;
``bnnprune --debug COMMAND ...`` adds the traceback and TensorFlow's start-up log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if "--debug" not in sys.argv[1:]:
    # a quiet start: TensorFlow's C++ start-up lines (e.g. the CUDA "Unable to register
    # cuDNN factory" errors of a CPU-only machine) only with --debug
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bnnprune_tf  # noqa: E402,F401  (selects Keras 2 before tensorflow loads)
from bnnprune_tf import files  # noqa: E402
from bnnprune_tf.errors import BnnpruneError, FirmwareError  # noqa: E402


def _run(args):
    from pipelines.runner import run_recipe

    run_dir = run_recipe(args.recipe, run_dir=args.run_dir, force=args.force)
    print(f"results in {run_dir}/ (report.md, report.json, model.keras)")


def _train(args):
    from bnnprune_tf import data, files, training
    from pipelines.recipe import parse_recipe
    from pipelines.stages.training import train_model

    recipe = parse_recipe({
        "name": "train", "seed": args.seed, "stages": ["train"],
        "data": {"name": args.data, "path": args.data_path, "limit": args.limit,
                 "batch_size": args.batch_size},
        "model": {"name": args.model, "width": args.width},
        "training": {"epochs": args.epochs, "learning_rate": args.learning_rate}},
        "(command line)")
    files.check_writable(args.out)
    d = recipe.data
    ds = data.load(d.name, path=d.path, seed=recipe.seed, limit=d.limit)
    model, _ = train_model(recipe, ds)
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
    from bnnprune_tf import models, profile
    from bnnprune_tf.errors import ModelError

    if os.path.exists(args.model):
        model = models.load(args.model)
    elif args.model in models.names():
        model = models.build(args.model, args.input_shape, args.classes, args.width)
    else:
        raise ModelError(f"{args.model!r} is neither a saved model file nor a reference "
                         f"model ({', '.join(models.names())})")
    cost = profile.profile(model)
    print(json.dumps(cost.to_dict(), indent=2) if args.json else cost.to_markdown())


def _data_for(model, args):
    """``--data`` as ``model`` reads it: raw pixels for a bit-sliced (CBNN) model."""
    from bnnprune_tf import data
    from bnnprune_tf.methods.cbnn import bit_slice_layer

    ds = data.load(args.data, seed=args.seed)
    return ds.pixels() if bit_slice_layer(model) is not None else ds


def _convert(args):
    from bnnprune_tf import models

    files.check_writable(args.out)
    model = models.load(args.model)
    if args.to != "lce":
        return _convert_tflm(model, args)
    from pipelines import report
    from pipelines.stages.deploy import convert_lce

    x = y = None
    if args.data:
        x, y = _data_for(model, args).arrays(args.split, limit=args.limit)
    flatbuffer, _, blocks = convert_lce(model, args.target, x, y)
    files.write_bytes(args.out, flatbuffer)
    print(report.render(blocks))
    print(f"saved {args.out}")


def _convert_tflm(model, args):
    """``--to tflm``: exact int8 .tflite for stock TFLM; ``tflm-c``: plus model_data.h/.cc."""
    from pathlib import Path

    from bnnprune_tf.errors import ConversionError
    from converters import tflm

    samples = None
    if args.data:
        samples, _ = _data_for(model, args).arrays(args.split, limit=args.limit or 200)
    if args.to == "tflm-c":
        if samples is None:
            raise ConversionError("--to tflm-c needs --data (e.g. mnist5k): its samples set the "
                                  "output scale, measure the arena and become test vectors")
        out = Path(args.out)
        report = tflm.write_c_source(model, samples, out.parent, tflite_name=out.name)
    else:
        flatbuffer = tflm.to_tflm(model, calibration=samples)
        report = tflm.verify_tflm(model, flatbuffer, samples) if samples is not None else {
            "model_bytes": len(flatbuffer), "ops": tflm.ops(flatbuffer)}
        files.write_bytes(args.out, flatbuffer)        # verified before it gets its name
    print(json.dumps(report, indent=2))
    print(f"saved {args.out}")


def _bench(args):
    from bnnprune_tf.errors import BenchmarkError
    from converters import bench

    if args.vs == args.model:
        raise BenchmarkError("--vs names the same file as MODEL: pass a different .tflite")
    models = {path: path for path in [args.model] + ([args.vs] if args.vs else [])}
    kernels = args.kernel or list(bench.KERNELS)
    if args.device:
        results = bench.bench_device(models, args.device, kernels, args.runs, args.warmup,
                                     args.threads, args.profile, args.xnnpack, args.binary,
                                     args.remote_dir)
    else:
        results = bench.bench_host(models, kernels, args.runs, args.warmup, args.threads)
    ratios = {k: bench.ratio(bench.find(results, args.model, k), bench.find(results, args.vs, k))
              for k in kernels} if args.vs else {}
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results],
                          "time_ratio_model_over_vs": ratios}, indent=2))
        return
    print(bench.to_markdown(results))
    for kernel, rel in ratios.items():
        print(f"{kernel}: time {args.model} / {args.vs} = {rel['ratio']:.3f} ({rel['method']})")
    for r in results:
        if r.ops:
            print("\n" + bench.ops_to_markdown(r))
    if not args.device:
        print("(host: LCE interpreter with x86 portable kernels; compare ratios, not times)")


def _firmware(args):
    from converters import c_export
    from converters import firmware as fw

    if args.action == "build":
        from bnnprune_tf import models

        fw.check_board(args.board)
        files.check_writable(os.path.join(args.out, "model_data.c"))
        model = models.load(args.target)
        x = y = None
        if args.data:
            x, y = _data_for(model, args).arrays(args.split, limit=args.limit)
        info = c_export.write(model, args.out, samples=x, labels=y, boards=[args.board])
        fw.make("all", args.out, args.board)
        print(json.dumps(info, indent=2))
        print(f"model data in {args.out}/; built for {args.board}: "
              f"bnnprune firmware run {args.out} --board {args.board}")
    elif args.action == "run":
        result = fw.run(args.target, args.board)
        print(result["output"], end="")
        if result["passed"] + result["failed"] == 0:
            raise FirmwareError(f"the firmware in {args.target} ran no test vector, so nothing "
                                "was checked: build it with --data (e.g. --data mnist5k)")
        if args.profile:
            print(fw.profile_markdown(fw.profile(args.target, args.board)))
        if result["failed"]:
            raise FirmwareError(f"{result['failed']} of "
                                         f"{result['passed'] + result['failed']} test vectors "
                                         f"differ from Python on {args.board}")
    elif args.action == "size":
        print(json.dumps(fw.size(args.target, args.board), indent=2))
    else:
        print(fw.flash(args.target, args.board, args.flasher), end="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bnnprune",
        description="Prune binary neural networks (Larq) and ship them: "
                    "train, profile and run whole recipes.")
    p.add_argument("--debug", action="store_true",
                   help="on an error, print the full traceback; show TensorFlow's start-up log")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)

    r = sub.add_parser("run", parents=[debug],
                       help="run a YAML recipe (skips finished stages, resumes training)",
                       description="Run every stage of a YAML recipe in a run directory.")
    r.add_argument("recipe", help="path of the YAML recipe, e.g. pipelines/mnist_bnn.yaml")
    r.add_argument("--run-dir", help="where results go (default: runs/<recipe name>)")
    r.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    r.set_defaults(fn=_run)

    t = sub.add_parser("train", parents=[debug], help="train a reference BNN and save it",
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

    pr = sub.add_parser("profile", parents=[debug],
                        help="binary/float MACs, parameters and memory per layer",
                        description="Profile a saved model or a reference model by name.")
    pr.add_argument("model", help="a .keras/.h5 file or a reference model name")
    pr.add_argument("--input-shape", type=_parse_shape, default=(28, 28, 1),
                    help="input shape for a reference model (default 28,28,1)")
    pr.add_argument("--classes", type=int, default=10)
    pr.add_argument("--width", type=float, default=1.0)
    pr.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    pr.set_defaults(fn=_profile)

    c = sub.add_parser("convert", parents=[debug],
                       help="convert a saved model with LCE (lint, inspect, verify)",
                       description="Convert a .keras model to an LCE .tflite file; print lint "
                                   "findings and the op histogram, optionally verify vs Keras.")
    c.add_argument("model", help="a .keras/.h5 file")
    c.add_argument("--out", default="model.tflite", help="output file (default model.tflite)")
    c.add_argument("--target", default="arm", choices=["arm", "xcore"])
    c.add_argument("--to", default="lce", choices=["lce", "tflm", "tflm-c"],
                   help="lce (default); tflm: exact int8 .tflite for stock TensorFlow Lite "
                        "Micro; tflm-c: that plus model_data.h/.cc for firmware/tflm, written "
                        "beside --out (needs --data)")
    c.add_argument("--data", help="verify against Keras on this dataset (e.g. mnist5k)")
    c.add_argument("--split", default="test", choices=["train", "val", "test"])
    c.add_argument("--limit", type=int, help="verify on at most this many samples")
    c.add_argument("--seed", type=int, default=0, help="seed of the dataset split")
    c.set_defaults(fn=_convert)

    b = sub.add_parser("bench", parents=[debug],
                       help="latency of a .tflite model (host or device)",
                       description="Time an LCE model: on this host with the LCE interpreter "
                                   "(both bconv kernels, interleaved), or on a device with "
                                   "lce_benchmark_model over ssh or adb.")
    b.add_argument("model", help="a .tflite file")
    b.add_argument("--vs", metavar="OTHER", help="a second .tflite, timed alternately; "
                                                 "prints the time ratio MODEL / OTHER")
    b.add_argument("--device", help="ssh://user@host[:port], adb or adb:SERIAL (default: host)")
    b.add_argument("--binary", help="lce_benchmark_model path on the device")
    b.add_argument("--remote-dir", help="device folder the models are copied to")
    b.add_argument("--kernel", action="append", choices=["default", "indirect_bgemm"],
                   help="bconv kernel (repeatable; default both)")
    b.add_argument("--runs", type=int, default=50)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--profile", action="store_true", help="per-op profile (device only)")
    b.add_argument("--xnnpack", action="store_true", help="--use_xnnpack=true on the device")
    b.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    b.set_defaults(fn=_bench)

    f = sub.add_parser("firmware", parents=[debug],
                       help="C runtime for Cortex-M: build, run (QEMU), size, flash",
                       description="build: export a .keras model (plain or masked) as C model "
                                   "data with test vectors and build it for a board; run: run "
                                   "the test vectors on the host build or under QEMU; size: "
                                   "flash/RAM footprint; flash: program a real board.")
    f.add_argument("action", choices=["build", "run", "size", "flash"])
    f.add_argument("target", help="build: a .keras/.h5 file; run/size/flash: the model data "
                                  "directory that build wrote")
    f.add_argument("--board", default="mps2-an386",
                   help="host, a QEMU board (mps2-an386: M4, mps2-an500: M7, mps3-an547: M55) "
                        "or a real one; the list: firmware/boards/boards.tsv "
                        "(default mps2-an386)")
    f.add_argument("--out", default="build/model", help="build: model data directory")
    f.add_argument("--data", help="build: test vectors from this dataset (e.g. mnist5k)")
    f.add_argument("--split", default="test", choices=["train", "val", "test"])
    f.add_argument("--limit", type=int, default=10, help="build: number of test vectors")
    f.add_argument("--seed", type=int, default=0, help="seed of the dataset split")
    f.add_argument("--flasher", choices=["openocd", "pyocd", "st-flash"],
                   help="flash: the tool (default per board)")
    f.add_argument("--profile", action="store_true",
                   help="run: also count the instructions of every layer (QEMU boards)")
    f.set_defaults(fn=_firmware)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; an error is one line on stderr and exit code 2 (``--debug``: the
    full traceback too)."""
    args = parser().parse_args(argv)
    if not args.debug:
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        args.fn(args)
    except (BnnpruneError, OSError) as e:
        if isinstance(e, OSError):
            if e.errno not in files.WRITE_FAILURES:
                raise
            e = files.write_error(e, e.filename or ".")
        if args.debug:
            import traceback

            traceback.print_exc()
        message = " ".join(line.strip() for line in str(e).splitlines())
        print(f"bnnprune: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
