"""Stages that prune: ``prune`` (any registered method) and ``shrink``.

``- prune: {method: wff, interval: 3, ...}`` runs
:meth:`bnnprune_tf.methods.base.Method.run` of the named method on the latest
model; the other keys are validated by the method's own parameter schema, so
an error names the field path (``stages[3].prune.interval: ...``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from bnnprune_tf import files, methods, profile, prune
from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods import Context
from bnnprune_tf.prune import kept_widths
from pipelines import report as report_lib
from pipelines.stages.base import NoParams, stage


def _method_error(message: str, value: Any):
    from pydantic_core import InitErrorDetails, PydanticCustomError
    from pydantic import ValidationError

    return ValidationError.from_exception_data("prune", [InitErrorDetails(
        type=PydanticCustomError("method", message), loc=("method",), input=value)])


def parse_prune(params: dict) -> methods.Method:
    """``{method: name, **params}`` -> the method, its params validated by its own schema."""
    params = dict(params or {})
    name = params.pop("method", None)
    if name not in methods.names():
        raise _method_error(f"unknown or missing method, expected one of "
                            f"{', '.join(methods.names())}", name)
    cls = methods.get(name)
    return cls(cls.Params.model_validate(params))


def check_prune(recipe, method: methods.Method, model) -> None:
    method.check(model)


def cost(model) -> dict:
    return {"widths": kept_widths(model), **profile.profile(model).to_dict()["totals"]}


def comparison_rows(before: dict, after: dict) -> tuple[dict, dict]:
    """Widths per layer and total costs of two :func:`cost` dicts, as table rows."""
    widths = {name: {"before": w, "after": after["widths"].get(name, w)}
              for name, w in before["widths"].items()}
    totals = {label: {"before": before[key], "after": after[key]} for label, key in (
        ("binary MACs (BOPs)", "binary_macs"), ("ternary MACs", "ternary_macs"),
        ("float MACs", "float_macs"), ("memory bytes", "memory_bytes"))}
    return widths, totals


def exactness(masked, deliverable, x) -> dict:
    """The deliverable (shrunk) model against the masked one it comes from."""
    want, got = masked.predict(x, verbose=0), deliverable.predict(x, verbose=0)
    check = {"samples": len(x), "max_abs_diff": float(np.abs(want - got).max()),
             "argmax_agreement": float((want.argmax(1) == got.argmax(1)).mean())}
    if check["argmax_agreement"] < 1.0:
        raise ModelError(f"shrunk model disagrees with the masked model: {check}")
    return check


@stage("prune", parse=parse_prune, check=check_prune, distributed=True)
def prune_stage(run, method: methods.Method):
    """Prune the latest model with ``method``; saves ``model_<method>.keras`` (the
    deliverable: shrunk, ternary weights kept) and checks it against the masked model."""
    before, recipe = run.load_model(), run.recipe
    t = recipe.training
    context = Context(run.dataset, batch_size=recipe.data.batch_size,
                      augment=tuple(recipe.data.augment), seed=recipe.seed, epochs=t.epochs,
                      learning_rate=t.learning_rate, optimizer=t.optimizer,
                      schedule=t.schedule, work_dir=run.work_dir("prune"))
    result = method.run(before, context)
    name = f"model_{method.name}.keras"
    files.save_model(result.model, run.dir / name)
    view = run.data.pixels() if result.metrics.get("input") == "pixels" else run.dataset
    check = exactness(result.masked, result.model, view.arrays("val", limit=256)[0])
    costs = {"before": cost(before), "after": cost(result.model)}
    widths, totals = comparison_rows(costs["before"], costs["after"])
    blocks = [report_lib.heading(f"Pruning: `{method.name}`"),
              report_lib.text("Parameters: " + ", ".join(
                  f"{k} {v}" for k, v in method.params.model_dump(exclude_unset=True).items())),
              report_lib.table(widths, "Widths"), report_lib.table(totals, "Cost"),
              report_lib.table({"deliverable vs masked (val)": check})]
    blocks += [report_lib.table(rows, caption) for caption, rows in result.tables.items()]
    blocks += [report_lib.figure(run.dir, stem, fig) for stem, fig in result.figures.items()]
    blocks += [report_lib.text(note) for note in result.notes]
    return {"outputs": {"model": name, **{s: f"{s}.png" for s in result.figures}},
            "metrics": {"method": method.name, **result.metrics, "check": check, **costs},
            "report": blocks}


class ShrinkParams(NoParams):
    split: Literal["train", "val", "test"] = "val"
    samples: int = Field(256, gt=0)


@stage("shrink", ShrinkParams, distributed=True)
def shrink_stage(run, params):
    """Physically remove pruned channels of the latest model; check the outputs equal."""
    masked = run.load_model()
    small = prune.strip_pruning(masked)
    check = exactness(masked, small, run.dataset.arrays(params.split, limit=params.samples)[0])
    files.save_model(small, run.dir / "model_shrunk.keras")
    costs = {"before": cost(masked), "after": cost(small)}
    widths, totals = comparison_rows(costs["before"], costs["after"])
    return {"outputs": {"model": "model_shrunk.keras"},
            "metrics": {**costs, "check": check},
            "report": [report_lib.heading("Shrink: channels physically removed"),
                       report_lib.table(widths, "Widths"), report_lib.table(totals, "Cost"),
                       report_lib.table({f"shrunk vs masked ({params.split})": check})]}
