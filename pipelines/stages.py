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
                         recipe.model.width, **recipe.model.options)
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
    """Lint, convert with LCE (model.tflite), verify against Keras on a split, inspect.
    ``target: tflm`` writes the exact int8 TFLM export instead."""
    from converters import lce, lint

    if params.target == "tflm":
        return _convert_tflm(run, params)
    model = run.load_model()
    findings = lint.lint(model)
    flatbuffer = lce.convert(model, target=params.target)
    files.write_bytes(run.dir / "model.tflite", flatbuffer)
    x, y = run.dataset.arrays(params.split)
    check = lce.verify(model, flatbuffer, x, y, atol=params.atol,
                       min_agreement=params.min_agreement)
    info = lce.inspect(flatbuffer)
    expected = len(lint.binary_conv_layers(model, findings))
    bconvs = info.ops.get(lce.BINARY_CONV, 0)
    return {
        "outputs": {"tflite": "model.tflite"},
        "metrics": {"verify": {"split": params.split, **check.to_dict()},
                    "inspect": info.to_dict(),
                    "binary_convs": {"expected": expected, "LceBconv2d": bconvs},
                    "lint": [f.to_dict() for f in findings]},
        "markdown": "\n\n".join([
            f"### LCE conversion (target {params.target}): `model.tflite`",
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


@stage("benchmark", BenchmarkParams)
def benchmark(run, params):
    """Latency of the latest model.tflite: LCE interpreter here, or lce_benchmark_model."""
    from converters import bench

    path = run.latest_output("tflite")
    name = path.stem
    if params.device:
        results = bench.bench_device({name: path}, params.device, params.kernels, params.runs,
                                     params.warmup, params.threads, params.profile,
                                     binary=params.binary)
        note = f"`lce_benchmark_model` on `{params.device}`."
    else:
        results = bench.bench_host({name: path}, params.kernels, params.runs, params.warmup,
                                   params.threads, seed=run.recipe.seed)
        note = ("LCE Python interpreter on this host, kernels interleaved in one run. x86 runs "
                "portable C++ bconv kernels, not ARM's: use these numbers as ratios only.")
    metrics = {r.kernel: r.to_dict() for r in results}
    lines = [f"### Latency of `{path.name}`", note, bench.to_markdown(results)]
    lines += [bench.ops_to_markdown(r) for r in results if r.ops]
    if len(results) == 2:
        rel = bench.ratio(results[1], results[0])
        metrics["ratio"] = {"of": f"{results[1].kernel} / {results[0].kernel}", **rel}
        lines.append(f"Time ratio {results[1].kernel} / {results[0].kernel}: "
                     f"{rel['ratio']:.3f} ({rel['method']}).")
    return {"metrics": metrics, "markdown": "\n\n".join(lines)}


@stage("report")
def report(run, params):
    """report.md, report.json and training_curves.png from all earlier stages."""
    paths = report_lib.write_report(run)
    return {"outputs": paths}
