"""YAML recipes: what data, which model, how to train, and which stages to run.

A recipe is validated completely before any work starts; an error names the
field path and what was expected, e.g.
``training.epochs: Input should be a valid integer (got 'ten')``.

Example recipe::

    name: mnist_bnn
    seed: 0
    data: {name: mnist5k, batch_size: 64}
    model: {name: mnist_bnn, width: 1.0}
    training: {epochs: 15, learning_rate: 0.01, schedule: cosine}
    distribute: {strategy: none}      # or mirrored, multi_worker (TF_CONFIG)
    stages:
      - train
      - evaluate: {splits: [val, test]}
      - report

Example use::

    from pipelines.recipe import load_recipe
    recipe = load_recipe("pipelines/mnist_bnn.yaml")
    print(recipe.training.epochs, [s.name for s in recipe.stages])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bnnprune_tf import data as data_lib
from bnnprune_tf import models as models_lib
from bnnprune_tf.errors import BnnpruneError, RecipeError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    name: str = "mnist5k"
    path: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=0)
    augment: list[Literal["shift", "flip"]] = []

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if v not in data_lib.SOURCES:
            raise ValueError(f"unknown dataset {v!r}, expected one of {', '.join(data_lib.SOURCES)}")
        return v


class ModelSpec(Strict):
    name: str = "mnist_bnn"
    width: float = Field(1.0, gt=0)
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if v not in models_lib.names():
            raise ValueError(f"unknown model {v!r}, expected one of {', '.join(models_lib.names())}")
        return v


class TrainingSpec(Strict):
    epochs: int = Field(10, gt=0)
    learning_rate: float = Field(1e-2, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    optimizer: Literal["adam", "sgd"] = "adam"


class DistributeSpec(Strict):
    """``none``: one device; ``mirrored``: every local device (GPUs, else the logical CPUs);
    ``multi_worker``: the workers of ``TF_CONFIG`` (see :mod:`bnnprune_tf.distribute`).
    ``timeout``: seconds to wait for all workers and for one collective step."""

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    timeout: float = Field(120.0, gt=0)


class StageSpec(Strict):
    name: str
    params: dict[str, Any] = {}


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    distribute: DistributeSpec = DistributeSpec()
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_entries(cls, v):
        """Accept ``- train`` and ``- evaluate: {splits: [test]}`` entries."""
        if not isinstance(v, list):
            return v
        out = []
        for entry in v:
            if isinstance(entry, str):
                out.append({"name": entry})
            elif isinstance(entry, dict) and len(entry) == 1:
                (name, params), = entry.items()
                out.append({"name": name, "params": params if params is not None else {}})
            else:
                raise ValueError(
                    "each stage is a name (`- train`) or a one-key mapping "
                    f"(`- evaluate: {{splits: [test]}}`), got {entry!r}")
        return out


def _format(error: ValidationError, source: str, prefix: str = "") -> str:
    lines = []
    for e in error.errors():
        loc = prefix
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc or '<recipe>'}: {msg}{shown}")
    return f"invalid recipe {source}:\n" + "\n".join(lines)


def parse_recipe(obj: dict, source: str = "<dict>") -> Recipe:
    """Validate a recipe given as a dict; stage parameters are checked too."""
    if not isinstance(obj, dict):
        raise RecipeError(f"invalid recipe {source}: the top level must be a mapping, "
                          f"got {type(obj).__name__}")
    try:
        recipe = Recipe.model_validate(obj)
    except ValidationError as e:
        raise RecipeError(_format(e, source)) from None
    stage_params(recipe, source)
    return recipe


def stage_params(recipe: Recipe, source: str = "<recipe>") -> list:
    """Each stage's validated parameters (by the stage's own schema), in order."""
    from pipelines.stages import STAGES

    out = []
    for i, stage in enumerate(recipe.stages):
        if stage.name not in STAGES:
            raise RecipeError(f"invalid recipe {source}:\n  stages[{i}]: unknown stage "
                              f"{stage.name!r}, expected one of {', '.join(STAGES)}")
        try:
            out.append(STAGES[stage.name].parse(stage.params))
        except ValidationError as e:
            raise RecipeError(_format(e, source, f"stages[{i}].{stage.name}")) from None
    return out


def check_against_model(recipe: Recipe, dataset, params: list | None = None,
                        source: str = "<recipe>") -> None:
    """Cross-field checks of every stage against the model the recipe builds (built here,
    untrained, seeded): layer names that exist and are prunable, device strings... Runs
    before any training, so a bad recipe fails in seconds and leaves no files. ``params``:
    the stages' parsed parameters (:func:`stage_params`), parsed here if not given."""
    from pipelines.stages import STAGES

    try:
        model = models_lib.build(recipe.model.name, dataset.input_shape, dataset.num_classes,
                                 recipe.model.width, seed=recipe.seed, **recipe.model.options)
    except TypeError as e:
        raise RecipeError(f"invalid recipe {source}:\n  model.options: {e}") from None
    params = params if params is not None else stage_params(recipe, source)
    for i, (stage, parsed) in enumerate(zip(recipe.stages, params)):
        check = STAGES[stage.name].check
        if check is None:
            continue
        try:
            check(recipe, parsed, model)
        except BnnpruneError as e:
            raise RecipeError(f"invalid recipe {source}:\n  stages[{i}].{stage.name}: {e}"
                              ) from None


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        obj = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    return parse_recipe(obj, str(path))
