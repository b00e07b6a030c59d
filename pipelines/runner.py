"""Run a recipe's stages in a run directory that remembers what is done.

Layout of a run directory (default ``runs/<recipe name>``)::

    recipe.json             the validated recipe of the latest run
    stages/00-train.json    one manifest per finished stage (written atomically)
    train/                  a stage's work directory (e.g. training backup, history)
    model.keras ...         artifacts, named in the manifests' "outputs"

A stage is skipped when its manifest exists, was made from the same inputs (a
fingerprint of the data, model and training sections, the seed, the stage list
up to and including it, the content of the data files, and the previous
stage's manifest with its output hashes) and every output it lists still has
the sha256 it recorded. Otherwise it reruns, and every later stage too. An
interrupted training resumes from its last finished epoch (see
:func:`bnnprune_tf.training.fit`), a method from its last finished round or
layer (``prune/``). One run at a time per directory: ``.lock`` (see :func:`lock`).

Example::

    from pipelines.runner import run_recipe
    run_dir = run_recipe("pipelines/mnist_bnn.yaml")
    print((run_dir / "report.md").read_text())
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from functools import cached_property
from pathlib import Path

import tensorflow as tf

from bnnprune_tf import data as data_lib
from bnnprune_tf import distribute
from bnnprune_tf import files
from bnnprune_tf import models as models_lib
from bnnprune_tf.errors import DistributeError, RecipeError
from pipelines.recipe import Recipe, check_against_model, load_recipe, stage_params


def fingerprint(recipe: Recipe, index: int, data_hash: str = "", previous: dict | None = None
                ) -> str:
    """Hash of everything stage ``index`` of ``recipe`` depends on: its recipe settings, the
    content of the data files (``data_hash``) and the ``previous`` stage's manifest (its
    fingerprint and output hashes, so the chain covers every earlier stage's results)."""
    relevant = recipe.model_dump(exclude={"name", "stages"})
    if recipe.distribute.strategy == "none":
        relevant.pop("distribute")        # fingerprints of runs from before the field stay
    relevant["stages"] = [s.model_dump() for s in recipe.stages[: index + 1]]
    relevant["data_hash"] = data_hash
    if previous is not None:
        relevant["previous"] = [previous.get("fingerprint"), previous.get("hashes")]
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: Path) -> str:
    """sha256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hash(recipe: Recipe) -> str:
    """One hash of the recipe's data source files (name, size and content)."""
    digest = hashlib.sha256()
    for path in data_lib.source_files(recipe.data.name, recipe.data.path):
        if path.is_file():
            digest.update(f"{path.name}:{path.stat().st_size}:{file_hash(path)}".encode())
    return digest.hexdigest()[:16]


def output_hashes(directory: Path, outputs: dict) -> dict[str, str]:
    """``{relative path: sha256}`` of a stage's output files."""
    return {rel: file_hash(directory / rel) for rel in dict.fromkeys(outputs.values())}


def changed_outputs(directory: Path, manifest: dict) -> list[str]:
    """The outputs of ``manifest`` that are missing or not what the stage wrote."""
    hashes = manifest.get("hashes")
    if hashes is None:                      # a manifest from before hashes were recorded
        return list(manifest.get("outputs", {}).values()) or ["<no hashes>"]
    return [rel for rel, h in hashes.items()
            if not (directory / rel).is_file() or file_hash(directory / rel) != h]


@contextlib.contextmanager
def lock(directory: Path):
    """Hold ``directory/.lock`` (an advisory ``flock``, released by the kernel when the
    process dies, so a stale lock of a killed run is simply taken over); a second
    holder gets a :class:`RecipeError` naming the process that has it.

    Example::

        with lock(Path("runs/demo")):
            ...   # only this process runs stages here
    """
    path = directory / ".lock"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as e:
        raise RecipeError(f"cannot write to the run directory {directory}: {e.strerror}; "
                          "pass --run-dir with a directory you can write to") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RecipeError(
                f"run directory {directory} is in use by process {holder} (another "
                "`bnnprune run`); wait for it to finish, stop it, or pass --run-dir to use "
                "another directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


class Run:
    """What a stage sees: the recipe, the run directory and earlier results.

    Under ``distribute: {strategy: multi_worker}`` every worker runs the distributed
    stages; the chief writes into ``directory``, the others into a scratch directory
    (``dir``) removed at the end, reading only the chief's backups and finished stages
    from ``shared``.
    """

    def __init__(self, recipe: Recipe, directory: Path,
                 strategy: tf.distribute.Strategy | None = None):
        self.recipe = recipe
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = distribute.is_chief(self.strategy)
        self.shared = directory
        self.dir = directory if self.chief else Path(tempfile.mkdtemp(prefix="bnnprune-worker-"))
        self.manifests: list[dict] = []
        self.fingerprint = ""

    @property
    def multi_worker(self) -> bool:
        return self.recipe.distribute.strategy == "multi_worker"

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
        """A stage's own directory; emptied when the recipe settings changed. Other
        workers than the chief get the chief's (they only read its backups)."""
        path = self.shared / name
        if not self.chief:
            return path
        stamp = path / ".fingerprint"
        if path.exists() and (not stamp.exists() or stamp.read_text() != self.fingerprint):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        files.write_text(stamp, self.fingerprint)
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
        return models_lib.load(self.latest_output("model"), compile=True)


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
    # the strategy first: MultiWorkerMirroredStrategy must start before TensorFlow does
    strategy = distribute.strategy(recipe.distribute.strategy, recipe.distribute.timeout)
    run = Run(recipe, Path(run_dir) if run_dir else Path("runs") / recipe.name, strategy)
    check_against_model(recipe, run.dataset, params)
    if not run.chief:                      # no lock: the chief holds it, writes nothing
        try:
            _run_stages(run, params, STAGES, force, log)
        finally:
            shutil.rmtree(run.dir, ignore_errors=True)
        return run.shared
    with lock(run.dir):
        _run_stages(run, params, STAGES, force, log)
    return run.dir


def _run_stages(run: Run, params: list, stages: dict, force: bool, log) -> None:
    """Skip the stages that are up to date (same fingerprint, outputs intact), run the rest.
    Every worker of a multi-worker run skips what the chief skips."""
    recipe = run.recipe
    if run.chief:
        files.write_json(run.dir / "recipe.json", recipe.model_dump())
    data = data_hash(recipe)
    done = _finished_stages(run, data, log) if run.chief and not force else []
    first = distribute.agree(run.strategy, len(done)) if run.multi_worker else len(done)
    if not run.chief:                           # the chief's finished stages, its files
        done = [_shared_manifest(run, i) for i in range(first)]
    run.manifests.extend(done)
    for index in range(first, len(recipe.stages)):
        spec = recipe.stages[index]
        stage = stages[spec.name]
        run.fingerprint = fingerprint(recipe, index, data,
                                      run.manifests[-1] if run.manifests else None)
        if not (run.chief or stage.distributed):
            log(f"[{index}] {spec.name}: on the chief only")
            continue
        manifest_path = run.dir / "stages" / f"{index:02d}-{spec.name}.json"
        manifest_path.unlink(missing_ok=True)    # never a manifest of an unfinished stage
        log(f"[{index}] {spec.name}: running")
        started = time.time()
        scope = run.strategy.scope() if stage.distributed else contextlib.nullcontext()
        with scope:
            result = _call(stage, run, params[index])
        manifest = {"stage": spec.name, "index": index, "fingerprint": run.fingerprint,
                    "seconds": round(time.time() - started, 2), **result,
                    "hashes": output_hashes(run.dir, result.get("outputs", {})) if run.chief
                    else {}}                # another worker's manifests are never reread
        files.write_json(manifest_path, manifest)
        run.manifests.append(manifest)
        log(f"[{index}] {spec.name}: done in {manifest['seconds']:.1f} s")


def _finished_stages(run: Run, data: str, log) -> list[dict]:
    """The manifests of the leading stages that are up to date."""
    done = []
    for index, spec in enumerate(run.recipe.stages):
        previous = done[-1] if done else None
        manifest_path = run.dir / "stages" / f"{index:02d}-{spec.name}.json"
        if not manifest_path.exists():
            break
        manifest = _read_manifest(manifest_path)
        if manifest.get("fingerprint") != fingerprint(run.recipe, index, data, previous):
            break
        changed = changed_outputs(run.dir, manifest)
        if changed:
            log(f"[{index}] {spec.name}: {', '.join(changed)} changed or missing since it ran")
            break
        log(f"[{index}] {spec.name}: up to date, skipped")
        done.append(manifest)
    return done


def _shared_manifest(run: Run, index: int) -> dict:
    """The chief's manifest of finished stage ``index``, its outputs as absolute paths."""
    spec = run.recipe.stages[index]
    path = run.shared / "stages" / f"{index:02d}-{spec.name}.json"
    manifest = _read_manifest(path)
    if not manifest:
        raise RecipeError(f"this worker cannot read the chief's {path}: resuming a "
                          "multi_worker run needs the run directory on a file system all "
                          "workers share (or rerun with --force)")
    outputs = {k: os.fspath((run.shared / v).resolve()) for k, v in
               manifest.get("outputs", {}).items()}
    return {**manifest, "outputs": outputs}


def _call(stage, run: Run, params) -> dict:
    """``stage.fn(run, params)``, a full disk or unwritable directory as a clear error."""
    try:
        return stage.fn(run, params)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
        if not run.multi_worker:
            raise
        raise DistributeError(
            f"a worker of the multi_worker run stopped or cannot be reached "
            f"({type(e).__name__}: {e.message.splitlines()[0][:300]}): relaunch every worker "
            "with the same recipe and run directory; training resumes from its last epoch"
        ) from None
    except OSError as e:
        if e.errno not in files.WRITE_FAILURES:
            raise
        raise files.write_error(e, run.dir) from e
    except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) as e:
        if isinstance(e, tf.errors.ResourceExhaustedError) and "space" not in e.message:
            raise                           # out of memory, not out of disk
        error = errno.EACCES if isinstance(e, tf.errors.PermissionDeniedError) else \
            errno.ENOSPC
        raise files.write_error(OSError(error, e.message), run.dir) from e


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}                               # unreadable: the stage reruns
