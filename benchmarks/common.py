"""Helpers shared by the benchmark scripts: environment facts and result files.

Every script writes ``benchmarks/results/<name>.json`` (all numbers, plus the
command and environment) and ``<name>.md`` (a short table) atomically.

Example::

    from benchmarks.common import environment, write_results
    write_results("demo", {"rows": [...]}, "| a |\\n|---|\\n| 1 |", "python -m benchmarks.demo")
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)
import tensorflow as tf

from bnnprune_tf import files

RESULTS = Path(__file__).resolve().parent / "results"


class Timer(tf.keras.callbacks.Callback):
    """Records wall seconds per epoch (``epochs``) and per training step (``steps``).

    Example::

        timer = Timer()
        model.fit(data, epochs=3, callbacks=[timer])
        print(timer.epochs, timer.steps[:5])
    """

    def on_train_begin(self, logs=None):
        self.epochs, self.steps = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self._step)


def environment() -> dict:
    import larq
    import larq_compute_engine
    import tensorflow as tf

    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "larq": larq.__version__,
            "larq_compute_engine": larq_compute_engine.__version__}


def write_results(name: str, payload: dict, markdown: str, command: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``."""
    payload = {"command": command, "environment": environment(), **payload}
    files.write_json(RESULTS / f"{name}.json", payload)
    files.write_text(RESULTS / f"{name}.md",
                     f"# {name}\n\nMade by `{command}` on {payload['environment']['date']} "
                     f"({payload['environment']['cpus']} CPUs, {payload['environment']['machine']}).\n\n"
                     f"{markdown}\n")
    return RESULTS / f"{name}.json"
