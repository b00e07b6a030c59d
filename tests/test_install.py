"""A fresh install gets what CI tested: every dependency pinned in constraints.txt (used by
``make install``), tflite-micro pinned exactly; the CLI starts quietly on a CPU-only machine."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["test"].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_constraints_pin_every_dependency_and_make_uses_them():
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[name.lower().replace("_", "-")] = version
    missing = [r for r in _requirements() if _name(r) not in pinned]
    assert not missing, f"not in constraints.txt: {missing}"
    assert "bnnprune-tf" not in pinned
    tflm = [r for r in _requirements() if _name(r) == "tflite-micro"]
    assert tflm and "==" in tflm[0] and tflm[0].split("==")[1] == pinned["tflite-micro"]
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def _cli_stderr(*args) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 2), done.stderr
    return done.stderr


def test_cli_starts_quietly_unless_debug():
    quiet = _cli_stderr("profile", "no_such_model")
    assert quiet.splitlines() == [quiet.strip()]          # only the one-line error
    assert quiet.startswith("bnnprune: error: ") and "Unable to register" not in quiet
    assert "Traceback" in _cli_stderr("--debug", "profile", "no_such_model")
