"""Every bad input is a clear error before work: a table across the CLI, the recipe and the
Python API. Each case asserts the error type, key words of its message, the exit code
(CLI: 2, one line on stderr) and that no new file is left behind.

The CLI runs in-process (``pipelines.cli.main``), so TensorFlow starts once; most cases
fail before any TensorFlow work.
"""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnnprune_tf import data, errors, files, methods, models, prune, training
from pipelines import cli

E = errors


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("bad_inputs"))


def make_workspace(root: Path) -> Path:
    """A workspace: a tiny saved model, its .tflite, broken copies, a text file, a file
    standing where a directory is expected."""
    from converters import lce

    model = models.build("mnist_bnn", (28, 28, 1), 10, width=0.25)
    files.save_model(model, root / "model.keras")
    raw = (root / "model.keras").read_bytes()
    (root / "corrupt.keras").write_bytes(raw[: len(raw) // 3])
    flatbuffer = lce.convert(model)
    (root / "model.tflite").write_bytes(flatbuffer)
    (root / "truncated.tflite").write_bytes(flatbuffer[: len(flatbuffer) // 2])
    files.save_model(models.build("mnist_bnn", (200, 200, 1), 10, width=0.25),
                     root / "big_input.keras")           # an arena larger than 256 KiB
    (root / "notes.txt").write_text("not a model\n")
    (root / "afile").write_text("a file, not a directory\n")
    (root / "corrupt.csv.gz").write_text("this is not gzip\n")
    return root


def recipe(ws, stem, over=None):
    """A recipe file ``stem.yaml`` in the workspace (a small valid one, ``over`` applied)."""
    obj = {"name": "bad", "data": {"name": "mnist5k", "limit": 200},
           "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
           "stages": ["train", "report"]}
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(obj.get(key), dict):
            obj[key] = {**obj[key], **value}
        else:
            obj[key] = value
    path = ws / R / f"{stem}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if "recipes" not in p.parts}


R = "recipes"
MISSING = "/nonexistent/bnnprune"

# (id, argv with {ws} placeholders or a recipe spec, error words)
CLI_CASES = [
    ("run-missing-recipe", ["run", "{ws}/nope.yaml"], ["recipe", "not found"]),
    ("run-bad-yaml", ["run", ("raw", "name: [unclosed\n")], ["not valid YAML"]),
    ("run-top-level-list", ["run", ("raw", "- train\n")], ["top level must be a mapping"]),
    ("run-unknown-stage", ["run", {"stages": ["train", "deploy"]}], ["unknown stage", "deploy"]),
    ("run-no-stages", ["run", {"stages": []}], ["stages"]),
    ("run-extra-key", ["run", {"epochs": 3}], ["epochs", "Extra inputs"]),
    ("run-bad-name", ["run", {"name": "a b"}], ["name", "pattern"]),
    ("run-epochs-0", ["run", {"training": {"epochs": 0}}], ["training.epochs", "greater than 0"]),
    ("run-lr-negative", ["run", {"training": {"learning_rate": -1}}],
     ["training.learning_rate", "greater than 0"]),
    ("run-unknown-optimizer", ["run", {"training": {"optimizer": "adamw"}}],
     ["training.optimizer"]),
    ("run-limit-negative", ["run", {"data": {"limit": -5}}], ["data.limit", "greater than 0"]),
    ("run-batch-0", ["run", {"data": {"batch_size": 0}}], ["data.batch_size"]),
    ("run-unknown-dataset", ["run", {"data": {"name": "mnist6k"}}], ["unknown dataset"]),
    ("run-val-fraction", ["run", {"data": {"val_fraction": 1.5}}], ["data.val_fraction"]),
    ("run-unknown-augment", ["run", {"data": {"augment": ["rotate"]}}], ["data.augment"]),
    ("run-data-path-missing", ["run", {"data": {"path": MISSING}}], ["does not exist", "data.path"]),
    ("run-data-path-corrupt", ["run", {"data": {"path": "{ws}/corrupt.csv.gz"}}],
     ["not a gzip'd CSV"]),
    ("run-unknown-model", ["run", {"model": {"name": "resnet99"}}], ["unknown model"]),
    ("run-width-0", ["run", {"model": {"width": 0}}], ["model.width"]),
    ("run-model-option", ["run", {"model": {"options": {"depth": 3}}}], ["option", "depth"]),
    ("run-unknown-method", ["run", {"stages": ["train", {"prune": {"method": "magic"}}]}],
     ["unknown or missing method"]),
    ("run-round-to-0", ["run", {"stages": ["train", {"prune": {"method": "l1", "ratio": 0.5,
                                                               "round_to": 0}}]}], ["round_to"]),
    ("run-round-to-negative", ["run", {"stages": ["train", {"prune": {
        "method": "wff", "round_to": -8}}]}], ["round_to"]),
    ("run-ratio-1.5", ["run", {"stages": ["train", {"prune": {"method": "l1", "ratio": 1.5}}]}],
     ["ratio"]),
    ("run-no-target", ["run", {"stages": ["train", {"prune": {"method": "random"}}]}],
     ["give a target"]),
    ("run-unknown-layer", ["run", {"stages": ["train", {"prune": {
        "method": "l1", "ratios": {"conv9": 0.5}}}]}], ["no layer 'conv9'"]),
    ("run-latent-bad-granularity", ["run", {"stages": ["train", {"prune": {
        "method": "latent", "ratio": 0.5, "level": "row"}}]}], ["level"]),
    ("run-wff-interval", ["run", {"stages": ["train", {"prune": {
        "method": "wff", "interval": 5, "epochs": 2}}]}], ["interval"]),
    ("run-convert-target", ["run", {"stages": ["train", {"convert": {"target": "gpu"}}]}],
     ["target"]),
    ("run-device", ["run", {"stages": ["train", "convert", {"benchmark": {"device": "tcp://x"}}]}],
     ["unknown device"]),
    ("run-board", ["run", {"stages": ["train", {"firmware": {"boards": ["stm32"]}}]}],
     ["not a QEMU board"]),
    ("run-dir-not-writable", ["run", {}, "--run-dir", "{ws}/afile/run"],
     ["cannot write to the run directory"]),
    ("train-epochs-0", ["train", "--epochs", "0", "--out", "{ws}/m.keras"], ["training.epochs"]),
    ("train-lr-negative", ["train", "--learning-rate", "-1", "--out", "{ws}/m.keras"],
     ["learning_rate"]),
    ("train-limit-negative", ["train", "--limit", "-5", "--out", "{ws}/m.keras"], ["data.limit"]),
    ("train-batch-0", ["train", "--batch-size", "0", "--out", "{ws}/m.keras"],
     ["data.batch_size"]),
    ("train-width-0", ["train", "--width", "0", "--out", "{ws}/m.keras"], ["model.width"]),
    ("train-unknown-data", ["train", "--data", "imagenet", "--out", "{ws}/m.keras"],
     ["unknown dataset"]),
    ("train-unknown-model", ["train", "--model", "gpt", "--out", "{ws}/m.keras"],
     ["unknown model"]),
    ("train-data-path", ["train", "--data-path", MISSING, "--out", "{ws}/m.keras"],
     ["does not exist"]),
    ("train-out-not-writable", ["train", "--limit", "100", "--out", "{ws}/afile/m.keras"],
     ["cannot write"]),
    ("train-out-is-dir", ["train", "--limit", "100", "--out", "{ws}"], ["is a directory"]),
    ("profile-text-file", ["profile", "{ws}/notes.txt"], ["not a readable Keras model"]),
    ("profile-corrupt", ["profile", "{ws}/corrupt.keras"], ["corrupt"]),
    ("profile-unknown-name", ["profile", "resnet99"], ["neither a saved model file"]),
    ("convert-corrupt", ["convert", "{ws}/corrupt.keras", "--out", "{ws}/x.tflite"], ["corrupt"]),
    ("convert-text-file", ["convert", "{ws}/notes.txt", "--out", "{ws}/x.tflite"],
     ["not a readable Keras model"]),
    ("convert-missing", ["convert", "{ws}/nope.keras", "--out", "{ws}/x.tflite"], ["not found"]),
    ("convert-out-not-writable", ["convert", "{ws}/model.keras", "--out",
                                  "{ws}/afile/x.tflite"], ["cannot write"]),
    ("convert-tflm-c-no-data", ["convert", "{ws}/model.keras", "--to", "tflm-c", "--out",
                                "{ws}/tflm/m.tflite"], ["needs --data"]),
    ("convert-unknown-data", ["convert", "{ws}/model.keras", "--data", "mnist6k", "--out",
                              "{ws}/x.tflite"], ["unknown dataset"]),
    ("bench-truncated", ["bench", "{ws}/truncated.tflite"], ["truncated or corrupt"]),
    ("bench-text-file", ["bench", "{ws}/notes.txt"], ["not a TFLite flatbuffer"]),
    ("bench-missing", ["bench", "{ws}/nope.tflite"], ["not found"]),
    ("bench-vs-itself", ["bench", "{ws}/model.tflite", "--vs", "{ws}/model.tflite"],
     ["same file"]),
    ("bench-device", ["bench", "{ws}/model.tflite", "--device", "tcp://pi"], ["unknown device"]),
    ("bench-runs-0", ["bench", "{ws}/model.tflite", "--runs", "0"], ["runs >= 1"]),
    ("firmware-build-text-file", ["firmware", "build", "{ws}/notes.txt", "--out", "{ws}/fw"],
     ["not a readable Keras model"]),
    ("firmware-build-out-not-writable", ["firmware", "build", "{ws}/model.keras", "--out",
                                         "{ws}/afile/fw"], ["cannot write"]),
    ("firmware-unknown-board", ["firmware", "size", "{ws}", "--board", "stm99"],
     ["unknown board"]),
    ("firmware-build-unknown-board", ["firmware", "build", "{ws}/model.keras", "--out",
                                      "{ws}/fw", "--board", "stm99"], ["unknown board"]),
    ("firmware-build-too-big", ["firmware", "build", "{ws}/big_input.keras", "--out",
                                "{ws}/fw", "--board", "nrf52840-dk"],
     ["activation arena", "262,144 B of RAM", "nrf52840-dk"]),
    ("argparse-bad-choice", ["convert", "{ws}/model.keras", "--target", "gpu"],
     ["invalid choice"]),
]


def _argv(ws, case_id, argv):
    out = []
    for i, arg in enumerate(argv):
        if isinstance(arg, tuple):           # ("raw", text): a recipe file with that text
            path = ws / R / f"{case_id}.yaml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(arg[1])
            out.append(str(path))
        elif isinstance(arg, dict):          # a valid recipe with these changes
            arg = {k: ({kk: (vv.format(ws=ws) if isinstance(vv, str) else vv)
                        for kk, vv in v.items()} if isinstance(v, dict) else v)
                   for k, v in arg.items()}
            out.append(recipe(ws, case_id, arg))
        else:
            out.append(arg.format(ws=ws))
    if out[0] == "run" and "--run-dir" not in out:
        out += ["--run-dir", str(ws / "runs" / case_id)]
    return out


def run_cli(ws: Path, case_id: str, argv: list) -> tuple[int, str, set[str]]:
    """Run one CLI case in-process from ``ws``: ``(exit code, stderr, files left)``."""
    import contextlib
    import io

    args = _argv(ws, case_id, argv)
    before, cwd, err = listing(ws), os.getcwd(), io.StringIO()
    os.chdir(ws)
    try:
        with contextlib.redirect_stderr(err):
            try:
                code = cli.main(args)
            except SystemExit as e:             # argparse's own usage errors
                code = e.code
    finally:
        os.chdir(cwd)
    return code, err.getvalue(), listing(ws) - before


def run_api(ws: Path, small, call) -> tuple[BaseException | None, set[str]]:
    """Run one API case: ``(the exception raised or None, files left)``."""
    before = listing(ws)
    try:
        call(ws, small)
    except BaseException as e:                  # noqa: BLE001 (what was raised is the result)
        return e, listing(ws) - before
    return None, listing(ws) - before


@pytest.mark.parametrize("case_id, argv, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli(ws, case_id, argv, words):
    code, err, left = run_cli(ws, case_id, argv)
    assert code == 2, err
    assert err.startswith("bnnprune: error: ") or "usage:" in err, err
    if "usage:" not in err:
        assert err.count("\n") == 1, err           # one line, no traceback
    for word in words:
        assert word in err, err
    assert not left


def test_cli_run_dir_in_use_names_the_holder(ws, capsys):
    from pipelines.runner import lock

    run_dir = ws / "runs" / "busy"
    with lock(run_dir):
        before = listing(ws)
        code = cli.main(["run", recipe(ws, "busy"), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and f"in use by process {os.getpid()}" in err
    assert listing(ws) == before


def test_cli_disk_full_is_one_line_and_leaves_no_temp_file(ws, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    before = listing(ws)
    code = cli.main(["convert", str(ws / "model.keras"), "--out", str(ws / "full.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "free disk space" in err
    assert listing(ws) == before


def test_cli_firmware_run_without_test_vectors_is_an_error(ws, tmp_path):
    out = tmp_path / "fw"
    assert cli.main(["firmware", "build", str(ws / "model.keras"), "--out", str(out),
                     "--board", "host"]) == 0
    code, err, _ = run_cli(ws, "firmware-run-no-vectors",
                           ["firmware", "run", str(out), "--board", "host"])
    assert code == 2
    assert "ran no test vector" in err and "--data" in err, err


def test_cli_debug_prints_the_traceback(ws, capsys):
    assert cli.main(["--debug", "profile", str(ws / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ModelError" in err


# ------------------------------------------------------------------ Python API

@pytest.fixture(scope="module")
def small():
    return data.load("mnist5k", limit=100)


def _model(classes=10):
    return models.build("mnist_bnn", (28, 28, 1), classes, width=0.25)


def _nan_samples():
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1, 3, 4, 0] = np.nan
    return x


API_CASES = [
    ("load-path-missing", lambda ws, ds: data.load("mnist5k", path=MISSING), E.DataError,
     ["does not exist"]),
    ("load-limit-negative", lambda ws, ds: data.load("digits", limit=-5), E.DataError,
     ["limit must be a positive"]),
    ("load-corrupt-csv", lambda ws, ds: data.load("mnist5k", path=ws / "corrupt.csv.gz"),
     E.DataError, ["not a gzip'd CSV"]),
    ("load-dir-as-csv", lambda ws, ds: data.load("digits", path=ws), E.DataError,
     ["not a file"]),
    ("batches-0", lambda ws, ds: ds.batches("train", 0), E.DataError, ["batch_size"]),
    ("build-unknown-option", lambda ws, ds: models.build("mnist_bnn", (28, 28, 1), depth=3),
     E.ModelError, ["no option 'depth'"]),
    ("load-corrupt-model", lambda ws, ds: models.load(ws / "corrupt.keras"), E.ModelError,
     ["corrupt"]),
    ("load-missing-model", lambda ws, ds: models.load(ws / "nope.keras"), E.ModelError,
     ["not found"]),
    ("train-epochs-0", lambda ws, ds: training.train(_model(), ds, 0), E.ModelError,
     ["epochs must be"]),
    ("train-lr-negative", lambda ws, ds: training.train(_model(), ds, 1, -1.0), E.ModelError,
     ["learning_rate must be > 0"]),
    ("train-lr-nan", lambda ws, ds: training.train(_model(), ds, 1, float("nan")), E.ModelError,
     ["learning_rate"]),
    ("train-batch-0", lambda ws, ds: training.train(_model(), ds, 1, batch_size=0),
     E.ModelError, ["batch_size"]),
    ("train-labels-vs-outputs", lambda ws, ds: training.train(_model(classes=2), ds, 1),
     E.ModelError, ["labels up to 9", "2 outputs"]),
    ("method-round-to-0", lambda ws, ds: methods.get("l1")(ratio=0.5, round_to=0), E.ModelError,
     ["round_to"]),
    ("method-round-to-negative", lambda ws, ds: methods.get("wff")(round_to=-8), E.ModelError,
     ["round_to"]),
    ("method-latent-round-to-0", lambda ws, ds: methods.get("latent")(ratio=0.5, round_to=0),
     E.ModelError, ["round_to"]),
    ("prune-round-to-0", lambda ws, ds: prune.prune_filters(_model(), "l1", ratio=0.5,
                                                            round_to=0),
     E.ModelError, ["round_to"]),
    ("verify-nan", lambda ws, ds: __import__("converters.lce").lce.verify(
        _model(), (ws / "model.tflite").read_bytes(), _nan_samples()), E.ConversionError,
     ["NaN", "sample 1"]),
    ("c-export-nan", lambda ws, ds: __import__("converters.c_export").c_export.write(
        _model(), ws / "c_out", samples=_nan_samples()), E.ConversionError, ["NaN"]),
    ("read-truncated-tflite", lambda ws, ds: __import__("converters.flatbuffer").flatbuffer.read(
        (ws / "truncated.tflite").read_bytes()), E.ConversionError, ["truncated or corrupt"]),
    ("save-model-cleans-up", lambda ws, ds: files.save_model(_Failing(), ws / "m.keras"),
     OSError, ["No space"]),
    ("firmware-ram", lambda ws, ds: __import__("converters.firmware").firmware.check_fits(
        {"arena_bytes": 5 << 20, "weight_bytes": 1000}, "mps2-an386"), E.FirmwareError,
     ["needs 5,242,880 B", "RAM", "4,194,304"]),
    ("firmware-flash", lambda ws, ds: __import__("converters.firmware").firmware.check_fits(
        {"arena_bytes": 1000, "weight_bytes": 5 << 20}, "mps2-an386"), E.FirmwareError,
     ["weights", "FLASH"]),
    ("check-writable-file-parent", lambda ws, ds: files.check_writable(ws / "afile" / "x"),
     E.FileWriteError, ["cannot write"]),
]


class _Failing:
    """A model whose ``save`` writes half a file, then the disk is full."""

    def save(self, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("case_id, call, error, words", API_CASES,
                         ids=[c[0] for c in API_CASES])
def test_api(ws, small, case_id, call, error, words):
    raised, left = run_api(ws, small, call)
    assert isinstance(raised, error), repr(raised)
    for word in words:
        assert word in str(raised), str(raised)
    assert not left


def test_tiny_limit_warns_that_accuracy_means_little():
    with pytest.warns(UserWarning, match="val split has only 1 image"):
        data.load("mnist5k", limit=3)


def test_table_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) + 4 >= 50
