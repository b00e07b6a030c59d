"""Weight-flipping-frequency pruning (Li & Ren, ISQED 2020) against random and L1 filter
pruning at equal binary operations, on Fashion-MNIST, with LCE latency and tracking cost.

Per seed, with the reference conv BNN (``mnist_bnn``: 32-64-128 filters):

1. baseline: train ``--epochs`` with a cosine learning rate;
2. WFF: measure flips over ``--interval`` more epochs at a tenth of the learning
   rate, shrink to ``C'_l = round((1 - p_l) C_l)`` (T = 0), fine-tune
   ``--finetune`` epochs counting flips again, repeat (up to 3 prunings) while the
   validation accuracy stays within 0.5 point of the baseline: the largest cut of
   binary MACs within that budget;
3. random and L1 filter pruning of the baseline to exactly the WFF widths, then
   as many fine-tuning epochs as WFF used after its measuring round;
4. LCE host latency of the three pruned models and the baseline, interleaved in
   one run (both kernels), as ratios to the baseline;
5. tracking overhead: training steps with per-step flip sampling vs without,
   short runs alternating in ABBA order on the same model, median step-time ratio.

Accuracies are on the official 10,000-image test split. ``--limit`` trains on a
subset of the 54,000 training images (stated in the result) to fit the time box.

Run: ``python -m benchmarks.wff [--seeds 0 1 2] [--limit 20000]``
"""

from __future__ import annotations

import argparse
import statistics

import bnnprune_tf  # noqa: F401
import tensorflow as tf

from benchmarks.common import Timer, write_results
from bnnprune_tf import data, models, profile, prune, training
from bnnprune_tf.methods import flip_frequency as wff
from converters import bench, lce

LR, BATCH = 1e-2, 128


def _train(model, ds, epochs, lr, seed):
    training.train(model, ds, epochs, lr, batch_size=BATCH, seed=seed)
    return model


def _test(model, ds) -> float:
    return training.evaluate(training.compile_model(model), ds, "test")["accuracy"]


def _subset(ds: data.Dataset, limit: int | None) -> data.Dataset:
    if not limit:
        return ds
    return data.Dataset(ds.name, ds.x_train[:limit], ds.y_train[:limit], ds.x_val, ds.y_val,
                        ds.x_test, ds.y_test, ds.num_classes)


def run_seed(ds, seed: int, args) -> dict:
    base = _train(models.build("mnist_bnn", ds.input_shape, ds.num_classes, seed=seed), ds,
                  args.epochs, LR, seed)
    base_copy = tf.keras.models.clone_model(base)
    base_copy.set_weights(base.get_weights())           # WFF keeps training its own copy
    result = wff.prune_by_flip_frequency(
        base_copy, ds, epochs=args.epochs, interval=args.interval, threshold=0,
        max_iterations=3, accuracy_budget=0.005, follow_up="finetune",
        finetune_epochs=args.finetune, pretrained=True, learning_rate=LR, batch_size=BATCH,
        seed=seed)
    widths = prune.kept_widths(result.model)
    finetune = result.chosen * args.finetune
    pruned = {"wff": result.model}
    for criterion in ("random", "l1"):
        masked = prune.prune_filters(base, criterion, widths={
            n: w for n, w in widths.items() if w < prune.kept_widths(base)[n]}, seed=seed)
        small = prune.strip_pruning(masked)
        if finetune:
            _train(small, ds, finetune, LR / 10, seed)
        pruned[criterion] = small
    row = {"seed": seed, "baseline_test_accuracy": _test(base, ds),
           "baseline_binary_macs": profile.profile(base).binary_macs,
           "wff_rounds": result.to_dict(), "widths": widths, "finetune_epochs": finetune}
    flatbuffers = {"baseline": lce.convert(base)}
    for name, model in pruned.items():
        row[f"{name}_test_accuracy"] = _test(model, ds)
        row[f"{name}_binary_macs"] = profile.profile(model).binary_macs
        flatbuffers[name] = lce.convert(model)
    results = bench.bench_host(flatbuffers, runs=args.runs, warmup=3, seed=seed)
    for name in pruned:
        for kernel in bench.KERNELS:
            row[f"{name}_latency_ratio_{kernel}"] = bench.ratio(
                bench.find(results, name, kernel), bench.find(results, "baseline", kernel))["ratio"]
    print({k: v for k, v in row.items() if k != "wff_rounds"}, flush=True)
    return row


def tracking_overhead(ds, repeats: int, steps: int = 40) -> dict:
    """Median step time with per-step flip sampling / without: ``repeats`` short fits of
    ``steps`` steps each way, alternating in ABBA order (the machine's speed drifts)."""
    model = training.compile_model(models.build("mnist_bnn", ds.input_shape, ds.num_classes,
                                                seed=0), LR)
    tracker = wff.FlipTracker(steps=(0, 10**9), every=1)
    batches = ds.batches("train", BATCH).take(steps)
    plain, tracked = [], []
    for r in range(repeats):
        for with_tracker in ((False, True) if r % 2 == 0 else (True, False)):
            timer = Timer()
            callbacks = [timer, tracker] if with_tracker else [timer]
            model.fit(batches, epochs=1, callbacks=callbacks, verbose=0)
            (tracked if with_tracker else plain).extend(timer.steps[5:])
    return {"median_step_ms_without": 1000 * statistics.median(plain),
            "median_step_ms_with_per_step_sampling": 1000 * statistics.median(tracked),
            "overhead": statistics.median(tracked) / statistics.median(plain) - 1,
            "samples_taken": int(tracker.counter.samples), "repeats": repeats, "steps": steps}


def markdown(rows, overhead, args) -> str:
    def mean(key):
        return statistics.mean(r[key] for r in rows)

    lines = [f"Fashion-MNIST, `mnist_bnn` (32-64-128), {args.limit or 54000} training images, "
             f"{args.epochs} epochs baseline; WFF T = 0, interval {args.interval} epochs, "
             f"fine-tune {args.finetune} epochs per round, budget 0.5 point (validation). "
             "Test accuracy on the 10,000 test images; latency = LCE interpreter on this x86 "
             "host, time / baseline time (< 1 faster), interleaved in one run.", "",
             "| seed | baseline acc | BOPs cut | WFF acc | random acc | L1 acc | WFF widths "
             "| latency WFF / random / L1, default kernel | same, indirect kernel |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        cut = 1 - r["wff_binary_macs"] / r["baseline_binary_macs"]
        lines.append(
            f"| {r['seed']} | {r['baseline_test_accuracy']:.4f} | {cut:.1%} "
            f"| {r['wff_test_accuracy']:.4f} | {r['random_test_accuracy']:.4f} "
            f"| {r['l1_test_accuracy']:.4f} | {r['widths']} | "
            + " | ".join(" / ".join(f"{r[f'{m}_latency_ratio_{k}']:.2f}"
                                    for m in ("wff", "random", "l1")) for k in bench.KERNELS)
            + " |")
    cut = statistics.mean(1 - r["wff_binary_macs"] / r["baseline_binary_macs"] for r in rows)
    lines.append(f"| mean | {mean('baseline_test_accuracy'):.4f} | {cut:.1%} "
                 f"| {mean('wff_test_accuracy'):.4f} | {mean('random_test_accuracy'):.4f} "
                 f"| {mean('l1_test_accuracy'):.4f} | | | |")
    lines += ["", f"Tracking overhead with per-step sampling: {overhead['overhead']:+.1%} per "
              f"training step ({overhead['median_step_ms_with_per_step_sampling']:.2f} ms vs "
              f"{overhead['median_step_ms_without']:.2f} ms median over {overhead['repeats']} "
              f"alternating runs of {overhead['steps']} steps each way).", "",
              "Paper anchor (binary NIN / AlexNet on CIFAR-10): 20-40 % fewer binary operations "
              "at 0.5-1.0 point accuracy loss."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    ds = _subset(data.load("fashion_mnist"), args.limit)
    rows = [run_seed(ds, seed, args) for seed in args.seeds]
    overhead = tracking_overhead(ds, repeats=12)
    print(overhead)
    write_results("wff", {"rows": rows, "tracking_overhead": overhead, "args": vars(args)},
                  markdown(rows, overhead, args),
                  "python -m benchmarks.wff --seeds " + " ".join(map(str, args.seeds))
                  + f" --limit {args.limit} --epochs {args.epochs} --interval {args.interval} "
                  f"--finetune {args.finetune} --runs {args.runs}")


if __name__ == "__main__":
    main()
