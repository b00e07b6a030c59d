"""Stages that build, train, evaluate and report: ``train``, ``evaluate``, ``report``."""

from __future__ import annotations

from typing import Literal

from bnnprune_tf import files, models, profile, training
from pipelines import report as report_lib
from pipelines.stages import NoParams, stage


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


@stage("report")
def report(run, params):
    """report.md, report.json and training_curves.png from all earlier stages."""
    paths = report_lib.write_report(run)
    return {"outputs": paths}
