"""Stages that prune: ``prune`` (baseline criteria), ``shrink``, ``wff``, ``latent``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from bnnprune_tf import files, profile, prune, training
from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods import flip_frequency as wff
from bnnprune_tf.methods import latent_weight as lw
from bnnprune_tf.prune import kept_widths
from bnnprune_tf.shrink import shrink
from pipelines import report as report_lib
from pipelines.stages import NoParams, stage


RoundTo = int | Literal["lce"] | None


def _pruning_markdown(title: str, before, after, acc: dict | None = None) -> str:
    """Widths before/after per conv/dense layer, and BOPs of both models."""
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
    finetune_learning_rate: float | None = Field(None, gt=0)   # default: training's / 10
    round_to: RoundTo = None


@stage("wff", WFFParams)
def wff_stage(run, params):
    """Weight-flipping-frequency pruning of the latest (trained) model: measure flips,
    shrink, fine-tune or retrain, repeat; saves ``model_wff.keras``."""
    before, recipe = run.load_model(), run.recipe
    result = wff.prune_by_flip_frequency(
        before, run.dataset, epochs=recipe.training.epochs, interval=params.interval,
        threshold=params.threshold, max_iterations=params.iterations,
        accuracy_budget=params.accuracy_budget, follow_up=params.follow_up,
        finetune_epochs=params.finetune_epochs, pretrained=True,
        finetune_learning_rate=params.finetune_learning_rate,
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
