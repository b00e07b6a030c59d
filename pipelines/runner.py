"""Run a recipe's stages in a run directory that remembers what is done.

Layout of a run directory (default ``runs/<recipe name>``)::

    recipe.json             the validated recipe of the latest run
    stages/00-train.json    one manifest per finished stage (written atomically)
    train/                  a stage's work directory (e.g. training backup, history)
    model.keras ...         artifacts, named in the manifests' "outputs"

A stage is skipped when its manifest exists and was made from the same recipe
settings (a fingerprint of everything the stage depends on: the data, model and
training sections, the seed, and the stage list up to and including it). Once
one stage runs, every later stage runs too. An interrupted training resumes
from its last finished epoch (see :func:`bnnprune_tf.training.fit`).

Example::

    from pipelines.runner import run_recipe
    run_dir = run_recipe("pipelines/mnist_bnn.yaml")
    print((run_dir / "report.md").read_text())
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from functools import cached_property
from pathlib import Path

import tensorflow as tf

from bnnprune_tf import data as data_lib
from bnnprune_tf import files
from bnnprune_tf.errors import RecipeError
from pipelines.recipe import Recipe, check_against_model, load_recipe, stage_params


def fingerprint(recipe: Recipe, index: int) -> str:
    """Hash of everything stage ``index`` of ``recipe`` depends on."""
    relevant = recipe.model_dump(exclude={"name", "stages"})
    relevant["stages"] = [s.model_dump() for s in recipe.stages[: index + 1]]
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Run:
    """What a stage sees: the recipe, the run directory and earlier results."""

    def __init__(self, recipe: Recipe, directory: Path):
        self.recipe = recipe
        self.dir = directory
        self.manifests: list[dict] = []
        self.fingerprint = ""

    @property
    def dataset(self) -> data_lib.Dataset:
        """The recipe's data as the latest model reads it: raw pixels after a stage whose
        model takes them (metrics ``input: pixels``, e.g. ``prune: {method: cbnn}``)."""
        latest = next((m for m in reversed(self.manifests) if "model" in m.get("outputs", {})),
                      {})
        pixels = latest.get("metrics", {}).get("input") == "pixels"
        return self.data.pixels() if pixels else self.data

    @cached_property
    def data(self) -> data_lib.Dataset:
        d = self.recipe.data
        return data_lib.load(d.name, path=d.path, seed=self.recipe.seed,
                             val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             limit=d.limit)

    def work_dir(self, name: str) -> Path:
        """A stage's own directory; emptied when the recipe settings changed."""
        path = self.dir / name
        stamp = path / ".fingerprint"
        if path.exists() and (not stamp.exists() or stamp.read_text() != self.fingerprint):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        stamp.write_text(self.fingerprint)
        return path

    def latest_output(self, key: str) -> Path:
        """The newest artifact ``key`` (e.g. ``"model"``) of the finished stages."""
        for manifest in reversed(self.manifests):
            if key in manifest.get("outputs", {}):
                return self.dir / manifest["outputs"][key]
        raise RecipeError(
            f"no earlier stage produced a {key!r}: put a stage that does (e.g. train) "
            "before this one in the recipe's stages")

    def all_outputs(self, key: str) -> list[Path]:
        """Every artifact ``key`` of the finished stages, oldest first, without repeats."""
        paths = [self.dir / m["outputs"][key] for m in self.manifests if key in m.get("outputs", {})]
        return list(dict.fromkeys(paths))

    def load_model(self) -> tf.keras.Model:
        return tf.keras.models.load_model(self.latest_output("model"))


def run_recipe(recipe: Recipe | str | os.PathLike, run_dir: str | os.PathLike | None = None,
               force: bool = False, log=print) -> Path:
    """Run (or resume) ``recipe``; returns the run directory.

    Args:
        recipe: a :class:`Recipe` or the path of a YAML recipe.
        run_dir: where results go; default ``runs/<recipe name>``.
        force: rerun every stage even if its manifest is up to date.
    """
    from pipelines.stages import STAGES

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    params = stage_params(recipe)
    run = Run(recipe, Path(run_dir) if run_dir else Path("runs") / recipe.name)
    check_against_model(recipe, run.dataset, params)
    directory = run.dir
    directory.mkdir(parents=True, exist_ok=True)
    files.write_json(directory / "recipe.json", recipe.model_dump())
    stale = force
    for index, spec in enumerate(recipe.stages):
        stage = STAGES[spec.name]
        run.fingerprint = fingerprint(recipe, index)
        manifest_path = directory / "stages" / f"{index:02d}-{spec.name}.json"
        if not stale and manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") == run.fingerprint:
                log(f"[{index}] {spec.name}: up to date, skipped")
                run.manifests.append(manifest)
                continue
        stale = True
        log(f"[{index}] {spec.name}: running")
        started = time.time()
        result = stage.fn(run, params[index])
        manifest = {"stage": spec.name, "index": index, "fingerprint": run.fingerprint,
                    "seconds": round(time.time() - started, 2), **result}
        files.write_json(manifest_path, manifest)
        run.manifests.append(manifest)
        log(f"[{index}] {spec.name}: done in {manifest['seconds']:.1f} s")
    return directory
