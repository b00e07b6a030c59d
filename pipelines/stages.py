"""The stage registry. A stage is a plain function ``fn(run, params) -> result``.

The stages themselves live by concern: :mod:`pipelines.training_stages` (train,
evaluate, report), :mod:`pipelines.pruning_stages` (prune, shrink, wff,
latent) and :mod:`pipelines.deploy_stages` (convert, benchmark, firmware);
importing this module registers them all in :data:`STAGES`.

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
from typing import Callable

from pydantic import BaseModel, ConfigDict


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


# The stage modules register themselves with @stage when imported; one import each.
from pipelines import deploy_stages, pruning_stages, training_stages  # noqa: E402,F401
