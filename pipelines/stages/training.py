"""Stages that build, train, evaluate and report: ``train``, ``evaluate``, ``report``.

:func:`train_model` is the body of the ``train`` stage and of ``bnnprune train``.
"""

from __future__ import annotations

from typing import Literal

from bnnprune_tf import distribute, files, models, profile, training
from pipelines import report as report_lib
from pipelines.stages.base import NoParams, stage


def train_model(recipe, dataset, work_dir=None):
    """Build the recipe's model (seeded) and train it; returns ``(model, history)``.

    Example::

        model, history = train_model(load_recipe("pipelines/mnist_bnn.yaml"), ds)
    """
    model = models.build(recipe.model.name, dataset.input_shape, dataset.num_classes,
                         recipe.model.width, seed=recipe.seed, **recipe.model.options)
    if recipe.distribute.strategy != "none":        # global-batch statistics, as on one device
        model = distribute.synchronize_batch_norm(model)
    t = recipe.training
    history = training.train(model, dataset, t.epochs, t.learning_rate, optimizer=t.optimizer,
                             schedule=t.schedule, batch_size=recipe.data.batch_size,
                             augment=recipe.data.augment, seed=recipe.seed, work_dir=work_dir,
                             verbose=2)
    return model, history


@stage("train", distributed=True)
def train(run, params):
    """Build the recipe's model, train it (resumably), save ``model.keras``."""
    recipe = run.recipe
    model, history = train_model(recipe, run.dataset, run.work_dir("train"))
    files.save_model(model, run.dir / "model.keras")
    cost = profile.profile(model)
    t = recipe.training
    return {
        "outputs": {"model": "model.keras", "history": "train/history.csv"},
        "metrics": {"epochs": len(history), "history": history,
                    "final": {k: v for k, v in history[-1].items() if k != "epoch"},
                    "profile": cost.to_dict()["totals"]},
        "report": [
            report_lib.heading(f"Model `{recipe.model.name}` (width {recipe.model.width})"),
            report_lib.table(cost.rows(), first="layer"),
            report_lib.heading(f"Training: {len(history)} epochs, {t.optimizer}, {t.schedule} "
                               f"learning rate from {t.learning_rate}, batch "
                               f"{recipe.data.batch_size}"),
            report_lib.table({"last epoch": history[-1]}),
        ],
    }


class EvaluateParams(NoParams):
    splits: list[Literal["train", "val", "test"]] = ["val", "test"]


@stage("evaluate", EvaluateParams, distributed=True)
def evaluate(run, params):
    """Loss and accuracy of the latest model on the chosen splits."""
    model = training.compile_model(run.load_model())
    results = {split: training.evaluate(model, run.dataset, split) for split in params.splits}
    return {"metrics": results,
            "report": [report_lib.heading("Evaluation"), report_lib.table(results)]}


@stage("report")
def report(run, params):
    """report.md, report.json and training_curves.png from all earlier stages."""
    return {"outputs": report_lib.write_report(run)}
