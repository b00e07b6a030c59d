"""The cost of TensorFlow op determinism per training epoch (training.fit turns it on).

The MNIST BNN on mnist5k trains one epoch at a time, alternating determinism off/on in
ABBA order (the machine's speed drifts), 8 epochs each; the result is the ratio of the
median epoch times, on/off.

    python benchmarks/determinism.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402
from bnnprune_tf import data, models, training  # noqa: E402
from tensorflow.python.framework import config  # noqa: E402

PAIRS = 4       # ABBA blocks: 8 epochs each way


def main() -> None:
    ds = data.load("mnist5k", seed=0)
    model = training.compile_model(models.build("mnist_bnn", ds.input_shape, ds.num_classes),
                                   1e-3)
    batches = ds.batches("train", 64, shuffle=True, seed=0)
    model.fit(batches, epochs=1, verbose=0)                 # warm-up: tracing, first epoch
    times = {"off": [], "on": []}
    for _ in range(PAIRS):
        for setting in ("off", "on", "on", "off"):
            (config.enable_op_determinism if setting == "on" else config.disable_op_determinism)()
            started = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0)
            times[setting].append(time.perf_counter() - started)
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    rows = [{"setting": k, "epochs": len(v), "median_seconds_relative":
             statistics.median(v) / statistics.median(times["off"])} for k, v in times.items()]
    table = ("| op determinism | epochs | median epoch time (relative to off) |\n|---|---:|---:|\n"
             + "\n".join(f"| {r['setting']} | {r['epochs']} | {r['median_seconds_relative']:.3f} |"
                         for r in rows))
    write_results("determinism", {"rows": rows, "ratio_on_over_off": ratio,
                                  "epoch_seconds": times}, table,
                  "python benchmarks/determinism.py")
    print(table)


if __name__ == "__main__":
    main()
