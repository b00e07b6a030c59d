"""Pipeline stages: each is a plain function ``fn(run, params) -> result``.

A stage's result is a JSON-ready dict with optional keys ``outputs`` (artifact
paths relative to the run directory, e.g. ``{"model": "model.keras"}``),
``metrics`` (numbers for report.json) and ``markdown`` (its section of
report.md). Register a stage with :func:`stage`; its parameter model (a
pydantic model) validates the recipe's ``- name: {params}`` entry.

Example::

    from pydantic import BaseModel
    from pipelines.stages import stage

    class Params(BaseModel):
        split: str = "test"

    @stage("count", Params)
    def count(run, params):
        return {"metrics": {"samples": len(run.dataset.split(params.split)[1])}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bnnprune_tf import files, models, profile, training
from pipelines import report as report_lib


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Stage:
    name: str
    params: type[BaseModel]
    fn: Callable


STAGES: dict[str, Stage] = {}


def stage(name: str, params: type[BaseModel] = NoParams):
    """Register ``fn`` as pipeline stage ``name`` with parameter model ``params``."""

    def wrap(fn):
        STAGES[name] = Stage(name, params, fn)
        return fn

    return wrap


@stage("train")
def train(run, params):
    """Build the recipe's model, train it (resumably), save ``model.keras``."""
    recipe, ds = run.recipe, run.dataset
    model = models.build(recipe.model.name, ds.input_shape, ds.num_classes,
                         recipe.model.width, seed=recipe.seed, **recipe.model.options)
    t = recipe.training
    decay = t.epochs * training.steps_per_epoch(ds, recipe.data.batch_size)
    training.compile_model(model, t.learning_rate, t.optimizer,
                           decay_steps=decay if t.schedule == "cosine" else None)
    work = run.work_dir("train")
    history = training.fit(model, ds, recipe.training.epochs, recipe.data.batch_size,
                           recipe.data.augment, recipe.seed, work_dir=work)
    files.save_model(model, run.dir / "model.keras")
    cost = profile.profile(model)
    last = history[-1]
    return {
        "outputs": {"model": "model.keras", "history": "train/history.csv"},
        "metrics": {"epochs": len(history), "history": history,
                    "final": {k: v for k, v in last.items() if k != "epoch"},
                    "profile": cost.to_dict()["totals"]},
        "markdown": "\n\n".join([
            f"### Model `{recipe.model.name}` (width {recipe.model.width})",
            cost.to_markdown(),
            f"### Training: {len(history)} epochs, {t.optimizer}, {t.schedule} learning "
            f"rate from {t.learning_rate}, batch {recipe.data.batch_size}",
            report_lib.metrics_table({"last epoch": last}),
        ]),
    }


class EvaluateParams(NoParams):
    splits: list[Literal["train", "val", "test"]] = ["val", "test"]


@stage("evaluate", EvaluateParams)
def evaluate(run, params):
    """Loss and accuracy of the latest model on the chosen splits."""
    model = run.load_model()
    training.compile_model(model)
    results = {split: training.evaluate(model, run.dataset, split) for split in params.splits}
    return {"metrics": results,
            "markdown": "### Evaluation\n\n" + report_lib.metrics_table(results)}


class ConvertParams(NoParams):
    target: Literal["arm", "xcore", "tflm"] = "arm"   # tflm: exact int8 for stock TFLM
    split: Literal["train", "val", "test"] = "test"
    atol: float = Field(1e-3, ge=0)
    min_agreement: float = Field(1.0, ge=0, le=1)


def _convert_tflm(run, params):
    """Exact int8 TFLM export in ``tflm/``, verified in tflite-micro and tf.lite on a split."""
    from converters import tflm

    x, _ = run.dataset.arrays(params.split)
    report = tflm.write_c_source(run.load_model(), x, run.dir / "tflm",
                                 tflite_name="model_tflm.tflite")
    metrics = {k: v for k, v in report.items() if k != "files"}
    return {
        "outputs": {"tflite": "tflm/model_tflm.tflite", "tflm_c": "tflm/model_data.cc"},
        "metrics": {"tflm": {"split": params.split, **metrics}},
        "markdown": "\n\n".join([
            "### Exact int8 export for TensorFlow Lite Micro: `tflm/model_tflm.tflite`",
            f"Ops: {', '.join(report['ops'])}; {report['model_bytes']} bytes; TFLM arena "
            f"{report['arena_bytes']} bytes. Model data for `firmware/tflm`: `tflm/model_data.h/.cc`.",
            f"On the {params.split} split:\n\n" + report_lib.metrics_table({params.split: {
                k: metrics[k] for k in ("bit_exact", "tflite_bit_exact", "argmax_agreement",
                                        "integer_argmax_agreement")}}),
        ]),
    }


@stage("convert", ConvertParams)
def convert(run, params):
    """Lint, convert with LCE (``model.keras`` -> ``model.tflite``), verify against Keras on
    a split, inspect.
    ``target: tflm`` writes the exact int8 TFLM export instead."""
    from converters import lce, lint

    if params.target == "tflm":
        return _convert_tflm(run, params)
    model = run.load_model()
    name = run.latest_output("model").stem + ".tflite"   # model.keras -> model.tflite
    findings = lint.lint(model)
    flatbuffer = lce.convert(model, target=params.target)
    files.write_bytes(run.dir / name, flatbuffer)
    x, y = run.dataset.arrays(params.split)
    check = lce.verify(model, flatbuffer, x, y, atol=params.atol,
                       min_agreement=params.min_agreement)
    info = lce.inspect(flatbuffer)
    expected = len(lint.binary_conv_layers(model, findings))
    bconvs = info.ops.get(lce.BINARY_CONV, 0)
    return {
        "outputs": {"tflite": name},
        "metrics": {"verify": {"split": params.split, **check.to_dict()},
                    "inspect": info.to_dict(),
                    "binary_convs": {"expected": expected, "LceBconv2d": bconvs},
                    "lint": [f.to_dict() for f in findings]},
        "markdown": "\n\n".join([
            f"### LCE conversion (target {params.target}): `{name}`",
            f"Binary convolutions: {bconvs} `LceBconv2d` of {expected} expected by lint.",
            info.to_markdown(),
            f"Keras vs LCE on the {params.split} split:\n\n" + report_lib.metrics_table(
                {params.split: {k: v for k, v in check.to_dict().items() if v is not None}}),
            "#### Lint\n\n" + lint.to_markdown(findings),
        ]),
    }


class BenchmarkParams(NoParams):
    runs: int = Field(50, ge=1)
    warmup: int = Field(5, ge=0)
    threads: int = Field(1, ge=1)
    kernels: list[Literal["default", "indirect_bgemm"]] = ["default", "indirect_bgemm"]
    device: str | None = None          # ssh://user@host or adb[:serial]; None = this host
    binary: str | None = None          # lce_benchmark_model path on the device
    profile: bool = False              # per-op profile (device only)
    compare: bool = True               # also time every earlier .tflite of the run, interleaved


@stage("benchmark", BenchmarkParams)
def benchmark(run, params):
    """Latency of the latest .tflite (and, with ``compare``, of the run's earlier ones, e.g.
    unpruned vs pruned, interleaved): LCE interpreter here, or lce_benchmark_model."""
    from converters import bench

    path = run.latest_output("tflite")
    models = {p.stem: p for p in run.all_outputs("tflite")} if params.compare else {}
    models[path.stem] = path
    if params.device:
        results = bench.bench_device(models, params.device, params.kernels, params.runs,
                                     params.warmup, params.threads, params.profile,
                                     binary=params.binary)
        note = f"`lce_benchmark_model` on `{params.device}`."
    else:
        results = bench.bench_host(models, params.kernels, params.runs, params.warmup,
                                   params.threads, seed=run.recipe.seed)
        note = ("LCE Python interpreter on this host, kernels interleaved in one run. x86 runs "
                "portable C++ bconv kernels, not ARM's: use these numbers as ratios only.")
    metrics = {f"{r.model}/{r.kernel}": r.to_dict() for r in results}
    lines = [f"### Latency of `{path.name}`", note, bench.to_markdown(results)]
    lines += [bench.ops_to_markdown(r) for r in results if r.ops]
    ratios, base = {}, next(iter(models))        # base: the run's first .tflite
    for kernel in params.kernels:
        for name in models:
            if name != base:
                ratios[f"{name} / {base} ({kernel})"] = bench.ratio(
                    bench.find(results, name, kernel), bench.find(results, base, kernel))
    if len(params.kernels) == 2:
        second, first = (bench.find(results, path.stem, k) for k in reversed(params.kernels))
        ratios[f"{path.stem}: {params.kernels[1]} / {params.kernels[0]}"] = bench.ratio(second,
                                                                                      first)
    if ratios:
        metrics["ratios"] = ratios
        lines.append("Time ratios (< 1: faster), measured side by side:\n\n" +
                     report_lib.metrics_table({k: {"ratio": v["ratio"], "method": v["method"]}
                                               for k, v in ratios.items()}))
    return {"metrics": metrics, "markdown": "\n\n".join(lines)}


RoundTo = int | Literal["lce"] | None


def _pruning_markdown(title: str, before, after, acc: dict | None = None) -> str:
    """Widths before/after per conv/dense layer, and BOPs of both models."""
    from bnnprune_tf.prune import kept_widths

    wb, wa = kept_widths(before), kept_widths(after)
    pb, pa = profile.profile(before), profile.profile(after)
    rows = {name: {"before": wb[name], "after": wa.get(name, wb[name])} for name in wb}
    totals = {"binary MACs (BOPs)": {"before": pb.binary_macs, "after": pa.binary_macs},
              "float MACs": {"before": pb.float_macs, "after": pa.float_macs},
              "memory bytes": {"before": pb.memory_bytes, "after": pa.memory_bytes}}
    parts = [f"### {title}", "Widths:\n\n" + report_lib.metrics_table(rows),
             "Cost:\n\n" + report_lib.metrics_table(totals)]
    if acc:
        parts.append(report_lib.metrics_table(acc))
    return "\n\n".join(parts)


def _cost(model) -> dict:
    from bnnprune_tf.prune import kept_widths

    return {"widths": kept_widths(model), **profile.profile(model).to_dict()["totals"]}


class PruneParams(NoParams):
    criterion: Literal["l1", "random"] = "l1"
    ratio: float | None = Field(None, ge=0, lt=1)
    ratios: dict[str, float] | None = None
    widths: dict[str, int] | None = None
    round_to: RoundTo = None
    finetune_epochs: int = Field(0, ge=0)
    learning_rate: float = Field(1e-3, gt=0)


@stage("prune", PruneParams)
def prune_stage(run, params):
    """Mask filters of the latest model by a baseline criterion (L1 or random),
    optionally fine-tune with masks fixed; saves ``model_masked.keras``."""
    from bnnprune_tf import prune

    before = run.load_model()
    masked = prune.prune_filters(before, params.criterion, ratio=params.ratio,
                                 ratios=params.ratios, widths=params.widths,
                                 round_to=params.round_to, seed=run.recipe.seed)
    ds, batch = run.dataset, run.recipe.data.batch_size
    if params.finetune_epochs:
        training.compile_model(masked, params.learning_rate,
                               decay_steps=params.finetune_epochs * training.steps_per_epoch(ds, batch))
        training.fit(masked, ds, params.finetune_epochs, batch, run.recipe.data.augment,
                     run.recipe.seed, work_dir=run.work_dir("prune"))
    files.save_model(masked, run.dir / "model_masked.keras")
    val = training.evaluate(training.compile_model(masked), ds, "val")
    return {"outputs": {"model": "model_masked.keras"},
            "metrics": {"before": _cost(before), "after": _cost(masked), "val": val},
            "markdown": _pruning_markdown(
                f"Pruning: {params.criterion} filters, round_to {params.round_to}, "
                f"{params.finetune_epochs} fine-tuning epochs", before, masked,
                {"val after pruning": val})}


class ShrinkParams(NoParams):
    split: Literal["train", "val", "test"] = "val"
    samples: int = Field(256, gt=0)


@stage("shrink", ShrinkParams)
def shrink_stage(run, params):
    """Physically remove pruned channels; check the outputs equal the masked model's."""
    import numpy as np

    from bnnprune_tf.errors import ModelError
    from bnnprune_tf.shrink import shrink

    masked = run.load_model()
    small = shrink(masked)
    x, _ = run.dataset.arrays(params.split, limit=params.samples)
    want, got = masked.predict(x, verbose=0), small.predict(x, verbose=0)
    check = {"samples": len(x), "max_abs_diff": float(np.abs(want - got).max()),
             "argmax_agreement": float((want.argmax(1) == got.argmax(1)).mean())}
    if check["argmax_agreement"] < 1.0:
        raise ModelError(f"shrunk model disagrees with the masked model: {check}")
    files.save_model(small, run.dir / "model_shrunk.keras")
    return {"outputs": {"model": "model_shrunk.keras"},
            "metrics": {"before": _cost(masked), "after": _cost(small), "check": check},
            "markdown": _pruning_markdown("Shrink: channels physically removed", masked, small,
                                          {f"shrunk vs masked ({params.split})": check})}


class WFFParams(NoParams):
    threshold: float = Field(0, ge=0)
    interval: int = Field(2, ge=1)
    every: Literal["epoch"] | int = "epoch"
    iterations: int = Field(2, ge=1)
    accuracy_budget: float = Field(0.01, ge=0)
    follow_up: Literal["finetune", "scratch"] = "finetune"
    finetune_epochs: int | None = Field(None, gt=0)
    round_to: RoundTo = None


@stage("wff", WFFParams)
def wff_stage(run, params):
    """Weight-flipping-frequency pruning of the latest (trained) model: measure flips,
    shrink, fine-tune or retrain, repeat; saves ``model_wff.keras``."""
    from bnnprune_tf.methods import flip_frequency as wff

    before, recipe = run.load_model(), run.recipe
    result = wff.prune_by_flip_frequency(
        before, run.dataset, epochs=recipe.training.epochs, interval=params.interval,
        threshold=params.threshold, max_iterations=params.iterations,
        accuracy_budget=params.accuracy_budget, follow_up=params.follow_up,
        finetune_epochs=params.finetune_epochs, pretrained=True,
        learning_rate=recipe.training.learning_rate, batch_size=recipe.data.batch_size,
        round_to=params.round_to, every=params.every, seed=recipe.seed)
    files.save_model(result.model, run.dir / "model_wff.keras")
    first = result.iterations[0]
    files.write_bytes(run.dir / "wff_flips.png", report_lib.plot_histograms(
        {n: s.histogram for n, s in first.stats.items()},
        f"flips per weight over the last {params.interval} epochs (round 0)"))
    rounds = {f"round {it.index}": {"val accuracy": it.val_accuracy, "binary MACs": it.binary_macs,
                                    "max p_l": it.max_p} for it in result.iterations}
    p_table = {n: {f"p_l round {it.index}": it.stats[n].p for it in result.iterations
                   if n in it.stats} for n in first.stats}
    return {
        "outputs": {"model": "model_wff.keras", "flip_histograms": "wff_flips.png"},
        "metrics": {**result.to_dict(), "before": _cost(before), "after": _cost(result.model)},
        "markdown": "\n\n".join([
            _pruning_markdown(f"Weight-flipping-frequency pruning (T = {params.threshold}, "
                              f"interval {params.interval} epochs, {params.follow_up})",
                              before, result.model),
            f"Rounds (chosen: round {result.chosen}; stopped: {result.stop_reason}):\n\n"
            + report_lib.metrics_table(rounds),
            "Share of weights that flipped more than T times:\n\n" + report_lib.metrics_table(p_table),
            "![flip histograms](wff_flips.png)",
        ]),
    }


class FirmwareParams(NoParams):
    boards: list[Literal["mps2-an386", "mps2-an500", "mps3-an547"]] = ["mps2-an386", "mps3-an547"]
    split: Literal["train", "val", "test"] = "test"
    samples: int = Field(5, ge=1, le=200)   # test vectors embedded in the firmware


@stage("firmware", FirmwareParams)
def firmware(run, params):
    """Export the latest model (plain, shrunk or masked) for the C runtime, run its test
    vectors on the host build and under QEMU, and count instructions per inference."""
    from converters import c_export

    directory = run.work_dir("firmware")
    x, y = run.dataset.arrays(params.split, limit=params.samples)
    info = c_export.write(run.load_model(), directory / "model", samples=x, labels=y)
    rows = {"host": c_export.run(directory / "model", "host", directory / "host")}
    for board in params.boards:
        counts = c_export.count_instructions(directory / "model", board, directory / board)
        rows[board] = {**c_export.run(directory / "model", board, directory / board),
                       "core": c_export.QEMU_BOARDS[board],
                       "instructions_per_inference": int(np.median(counts)),
                       **c_export.size(directory / "model", board, directory / board)}
    for row in rows.values():
        row.pop("output")
        row["pass"] = row["failed"] == 0
    accuracy = float(np.mean(np.array(rows["host"]["predictions"]) == y))
    lines = ["| target | test vectors | instructions / inference | flash B | RAM B |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name}{' (' + row['core'] + ')' if 'core' in row else ''} | "
                     f"{row['passed']} passed, {row['failed']} failed | "
                     f"{row.get('instructions_per_inference', '')} | {row.get('flash', '')} | "
                     f"{row.get('ram', '')} |")
    return {
        "outputs": {"firmware_model": "firmware/model/model_data.c"},
        "metrics": {"firmware": {"split": params.split, "weight_bytes": info["weight_bytes"],
                                 "arena_bytes": info["arena_bytes"],
                                 "accuracy_on_vectors": accuracy, "targets": rows}},
        "markdown": "\n\n".join([
            "### C runtime for Cortex-M: `firmware/model/model_data.c`",
            f"{len(x)} {params.split} images embedded as test vectors; the firmware's int32 "
            "sums must equal Python's bit for bit. Weights "
            f"{info['weight_bytes']} B, arena {info['arena_bytes']} B. Instructions counted "
            "under QEMU by the project's TCG plugin.",
            "\n".join(lines)]),
    }


class LatentParams(NoParams):
    granularity: Literal["weight", "channel"] = "weight"
    epsilon: float | None = Field(None, ge=0)    # accuracy drop per layer (fraction); or
    budget: float | None = Field(None, gt=0, le=1)   # share of operations to keep; neither: 0
    grid: list[float] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    layers: list[str] | None = None
    eval_samples: int | None = Field(None, gt=0)
    finetune_epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    round_to: RoundTo = None


@stage("latent", LatentParams)
def latent_stage(run, params):
    """Latent-weight pruning (ASPDAC 2023) of the latest model: per-layer sensitivity,
    prune, fine-tune; saves ``model_latent.keras`` (shrunk at channel level, masked with
    ternary weights at weight level) and ``sensitivity.png``."""
    from bnnprune_tf.methods import latent_weight as lw

    before, recipe = run.load_model(), run.recipe
    result = lw.prune_by_latent_weights(
        before, run.dataset, granularity=params.granularity, epsilon=params.epsilon,
        budget=params.budget, grid=params.grid, layers=params.layers,
        eval_samples=params.eval_samples, finetune_epochs=params.finetune_epochs,
        learning_rate=params.learning_rate, batch_size=recipe.data.batch_size,
        gradual=params.schedule == "gradual", round_to=params.round_to, seed=recipe.seed,
        work_dir=run.work_dir("latent"), progress=True)
    files.save_model(result.model, run.dir / "model_latent.keras")
    target = (f"budget {params.budget:.0%} of operations" if params.budget is not None
              else f"epsilon {100 * (params.epsilon or 0.0):g} points per layer")
    files.write_bytes(run.dir / "sensitivity.png", result.analysis.plot(
        epsilon=None if params.budget is not None else params.epsilon or 0.0))
    return {
        "outputs": {"model": "model_latent.keras", "sensitivity": "sensitivity.png"},
        "metrics": {**result.to_dict(), "before_cost": _cost(before),
                    "after_cost": _cost(result.model)},
        "markdown": "\n\n".join([
            _pruning_markdown(f"Latent-weight pruning ({params.granularity} level, {target}, "
                              f"{params.schedule}, {params.finetune_epochs} fine-tuning epochs)",
                              before, result.model, {"before": result.before,
                                                     "after": result.after}),
            f"Operations (MACs on unmasked weights) reduced by "
            f"{100 * result.operations_reduction:.1f} %.",
            result.analysis.to_markdown(result.ratios),
            "![sensitivity](sensitivity.png)",
        ]),
    }


@stage("report")
def report(run, params):
    """report.md, report.json and training_curves.png from all earlier stages."""
    paths = report_lib.write_report(run)
    return {"outputs": paths}
