"""What a stage is: a plain function ``fn(run, params) -> result`` with its parameter schema.

Stages live by concern in :mod:`pipelines.stages.training` (train, evaluate,
report), :mod:`pipelines.stages.pruning` (prune, shrink) and
:mod:`pipelines.stages.deploy` (convert, benchmark, firmware); the package
(:mod:`pipelines.stages`) collects them into ``STAGES``. A stage module imports
only this module, never the package.

A stage's result is a JSON-ready dict with optional keys ``outputs`` (artifact
paths relative to the run directory, e.g. ``{"model": "model.keras"}``),
``metrics`` (numbers for report.json) and ``report`` (its section of report.md
as data: blocks made by :mod:`pipelines.report`). ``check(recipe, params,
model)``, if given, validates the parameters against the model the recipe
builds, before anything runs.

Example::

    from pydantic import BaseModel
    from pipelines import report
    from pipelines.stages.base import stage

    class Params(BaseModel):
        split: str = "test"

    @stage("count", Params)
    def count(run, params):
        n = len(run.dataset.split(params.split)[1])
        return {"metrics": {"samples": n}, "report": [report.text(f"{n} samples")]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Stage:
    name: str
    parse: Callable[[dict], Any]        # recipe params -> validated params (raises ValidationError)
    fn: Callable
    check: Callable | None = None       # (recipe, params, model) -> None, before the run
    distributed: bool = False           # trains/evaluates: runs on every worker, in the scope


def stage(name: str, params: type[BaseModel] = NoParams, check: Callable | None = None,
          parse: Callable[[dict], Any] | None = None, distributed: bool = False):
    """Make ``fn`` the :class:`Stage` ``name`` (the package collects it). A ``distributed``
    stage (one that builds, trains or evaluates models) runs under the recipe's
    ``tf.distribute`` strategy on every worker; the others run on the chief only."""

    def wrap(fn) -> Stage:
        return Stage(name, parse or params.model_validate, fn, check, distributed)

    return wrap
