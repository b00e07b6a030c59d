"""Instructions per inference of the C runtime on Cortex-M4/M7/M55 under QEMU.

Rows: mnist_bnn (width 1, 2 epochs on mnist5k) unpruned, and shrunk (50 % of the
filters of every prunable group removed by L1 norm, 1 epoch of fine-tuning).
For each model and board: instructions per inference, counted exactly by the
project's TCG plugin (``firmware/tools/insncount.c``) between two calls of
``bnn_mark()`` around ``bnn_run``; the footprint from ``arm-none-eabi-size``
(flash = text + data, RAM = data + bss). The speedup of the shrunk model is
set against its ideal ratio of binary operations (binary MACs of the packed
layers plus the first layer's int8 MACs). On M4, the SWAR popcount is compared with
``__builtin_popcount``. On this host, the C runtime (gcc -O2) and the LCE
interpreter run the same model on the same 100 images, interleaved, and the
time ratio is reported (no absolute times).

Run: ``python -m benchmarks.firmware`` (needs gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
BOARDS = {"mps2-an386": "Cortex-M4", "mps2-an500": "Cortex-M7", "mps3-an547": "Cortex-M55"}


def _make(*args) -> str:
    return subprocess.run(["make", "-s", "-C", str(FIRMWARE), *args], capture_output=True,
                          text=True, timeout=600, check=True).stdout


def count_instructions(model_dir, board: str, kernel: str = "opt", popcount: str = "swar",
                       build=None) -> list[int]:
    """Build the app for ``board`` and return the instructions of every inference
    (between the pairs of ``bnn_mark`` calls), counted by the TCG plugin.

    Example::

        count_instructions("build/model", "mps2-an386")   # -> [1812822, ...]
    """
    build = Path(build) if build else FIRMWARE / f"build/{board}-{kernel}-{popcount}"
    _make("plugin")
    _make(f"BOARD={board}", f"MODEL={model_dir}", f"KERNEL={kernel}", f"POPCOUNT={popcount}",
          f"BUILD={build}")
    elf = build / "bnn.elf"
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    mark = next(int(line.split()[0], 16) for line in symbols.splitlines()
                if line.split()[-1] == "bnn_mark")
    log = elf.with_suffix(".insns")
    run = subprocess.run(
        ["timeout", "300", "qemu-system-arm", "-M", board, "-display", "none", "-monitor", "none",
         "-serial", "none", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
         "-plugin", f"{FIRMWARE / 'build/libinsncount.so'},mark={mark:#x}", "-d", "plugin",
         "-D", str(log)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{board}: exit {run.returncode}: {run.stdout[-500:]}{run.stderr[-500:]}")
    marks = [int(v) for v in re.findall(r"^mark (\d+)", log.read_text(), re.M)]
    return [b - a for a, b in zip(marks[0::2], marks[1::2])]


def size(model_dir, board: str) -> dict:
    out = _make("size", f"BOARD={board}", f"MODEL={model_dir}").splitlines()[-1].split()
    text, data, bss = (int(v) for v in out[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def binary_ops(folded) -> int:
    """Multiply-accumulates of all convs (binary and the int8 first layer)."""
    from converters import fold

    total, x = 0, np.zeros((1, *folded.input_shape), np.int8)
    for layer in folded.layers:
        y = layer(x)
        if isinstance(layer, fold.Conv):
            total += int(np.prod(y.shape[1:])) * int(np.prod(layer.weights.shape[1:]))
        x = y
    return total


def host_vs_lce(model, model_dir, x) -> dict:
    """Time ratio C runtime (host gcc -O2) / LCE interpreter on the same images,
    5 interleaved rounds, medians."""
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    _make("host", "BOARD=host", f"MODEL={model_dir}")
    exe = FIRMWARE / "build/host-opt-swar/bnn"
    interpreter = Interpreter(lce.convert_keras_model(model), num_threads=1)
    c_times, lce_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(exe)], capture_output=True, check=True)
        c_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for sample in x:
            interpreter.predict(sample[None])
        lce_times.append(time.perf_counter() - start)
    return {"images": len(x), "ratio_c_over_lce": statistics.median(c_times)
            / statistics.median(lce_times), "note": "C time includes process start"}


def main():
    import bnnprune_tf  # noqa: F401
    import tensorflow as tf

    from benchmarks.common import write_results
    from bnnprune_tf import data, models, prune, shrink, training
    from converters import c_export, fold

    tf.keras.utils.set_random_seed(0)
    ds = data.load("mnist5k", seed=0)
    x, y = ds.arrays("test", limit=100)
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, width=1.0)
    training.compile_model(model, 1e-2)
    training.fit(model, ds, 2, 64, verbose=0)
    small = shrink.shrink(prune.prune_filters(model, "l1", ratio=0.5))
    training.compile_model(small, 1e-3)
    training.fit(small, ds, 1, 64, verbose=0)
    work = FIRMWARE / "build/bench"
    rows, host = [], {}
    for name, m in [("mnist_bnn", model), ("mnist_bnn shrunk 50%", small)]:
        directory = work / name.replace(" ", "_").replace("%", "")
        info = c_export.write(m, directory, samples=x[:3], labels=y[:3])
        row = {"model": name, "macs": binary_ops(fold.fold(m)), "weight_bytes": info["weight_bytes"],
               "arena_bytes": info["arena_bytes"], "boards": {}}
        for board, core in BOARDS.items():
            counts = count_instructions(directory, board)
            row["boards"][board] = {"core": core, "instructions": counts,
                                    "per_inference": int(statistics.median(counts)),
                                    **size(directory, board)}
        row["m4_builtin_popcount"] = int(statistics.median(
            count_instructions(directory, "mps2-an386", popcount="builtin")))
        rows.append(row)
        big = work / (directory.name + "_host")
        c_export.write(m, big, samples=x, labels=y)
        host[name] = host_vs_lce(m, big, x)
    base, shrunk = rows
    speedups = {b: base["boards"][b]["per_inference"] / shrunk["boards"][b]["per_inference"]
                for b in BOARDS}
    ideal = base["macs"] / shrunk["macs"]
    table = ["| model | core | instructions / inference | flash B | RAM B | weights B |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for board, b in r["boards"].items():
            table.append(f"| {r['model']} | {b['core']} ({board}) | {b['per_inference']:,} | "
                         f"{b['flash']:,} | {b['ram']:,} | {r['weight_bytes']:,} |")
    notes = [
        "",
        f"Shrunk vs unpruned: ideal MAC ratio {ideal:.2f}x; measured instruction ratio " +
        ", ".join(f"{BOARDS[b]} {s:.2f}x" for b, s in speedups.items()) + ".",
        "",
        "M4 popcount: " + "; ".join(
            f"{r['model']}: SWAR {r['boards']['mps2-an386']['per_inference']:,} vs "
            f"__builtin_popcount {r['m4_builtin_popcount']:,} instructions" for r in rows) + ".",
        "",
        "Host (x86, gcc -O2) C runtime vs LCE interpreter, same 100 images, time ratio C/LCE: " +
        ", ".join(f"{k} {v['ratio_c_over_lce']:.2f}" for k, v in host.items()) +
        " (C time includes starting the process).",
    ]
    write_results("firmware", {"rows": rows, "speedup_vs_unpruned": speedups,
                               "ideal_mac_ratio": ideal, "host_vs_lce": host},
                  "\n".join(table + notes), "python -m benchmarks.firmware")


if __name__ == "__main__":
    main()
