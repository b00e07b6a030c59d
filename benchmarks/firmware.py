"""Instructions per inference of the C runtime on Cortex-M4/M7/M55 under QEMU.

Models, for MNIST (mnist5k) and Fashion-MNIST (10,000 training images): mnist_bnn
(width 1, 2 epochs), then three pruned versions, each fine-tuned 1 epoch:

- shrunk: 50 % of the filters of every prunable group removed by L1 norm;
- ternary: 50 % of the binary weights masked by smallest latent magnitude
  (unstructured), kept as zeros in the C runtime's ternary slot format;
- ternary blocks: 50 % of the slots (one tap, 32 input channels, one filter) masked by
  smallest mean latent magnitude: what the slot format skips for free.

For each model and board: instructions per inference, counted exactly by the
project's TCG plugin (``converters.fw.count_instructions``); the footprint from
``arm-none-eabi-size`` (flash = text + data, RAM = data + bss); test accuracy in Keras.
The speedup over the unpruned model is set against its ideal ratio of operations
(MACs with nonzero weights: binary ones plus the first layer's int8 ones). On M4,
the SWAR popcount is compared with ``__builtin_popcount``. On this host, the C runtime
(gcc -O2) and the LCE interpreter run the same plain model on the same 100 images,
interleaved, and the time ratio is reported (no absolute times).

Run: ``python -m benchmarks.firmware`` (needs gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm).
"""

from __future__ import annotations

import statistics
import subprocess
import time

import numpy as np

BOARDS = {"mps2-an386": "Cortex-M4", "mps2-an500": "Cortex-M7", "mps3-an547": "Cortex-M55"}
SPARSITY = 0.5


def binary_ops(folded) -> int:
    """Multiply-accumulates with nonzero weights of all convs (binary and the int8 first
    layer): what an ideal kernel would execute."""
    from converters import fold

    total, x = 0, np.zeros((1, *folded.input_shape), np.int8)
    for layer in folded.layers:
        y = layer(x)
        if isinstance(layer, fold.Conv):
            total += int(np.prod(y.shape[1:3])) * int(np.count_nonzero(layer.weights))
        x = y
    return total


def weight_masks(model, sparsity: float, blocks: bool):
    """A masked copy of ``model`` with ``sparsity`` of each binary conv's weights masked by
    smallest latent magnitude: single weights, or whole slots of 32 input channels."""
    from bnnprune_tf import masks

    masked = masks.prunable(model)
    for layer in masked.layers:
        if not masks.is_masked(layer) or layer.input_quantizer is None:
            continue
        score = np.abs(layer.latent_kernel.numpy())                       # HWIO
        if blocks:
            kh, kw, cin, cout = score.shape
            words = -(-cin // 32)
            padded = np.zeros((kh, kw, words * 32, cout))
            padded[:, :, :cin] = score
            slot = padded.reshape(kh, kw, words, 32, cout).mean(axis=3)
            score = np.repeat(slot, 32, axis=2)[:, :, :cin]
            keep = score > np.quantile(slot, sparsity)
        else:
            keep = score > np.quantile(score, sparsity)
        layer.set_masks(weights=keep.astype("float32"))
    return masked


def host_vs_lce(model, model_dir, x) -> dict:
    """Time ratio C runtime (host gcc -O2) / LCE interpreter on the same images,
    5 interleaved rounds, medians."""
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from converters import firmware as fw

    build = model_dir.parent / (model_dir.name + "_hostbuild")
    fw.make("host", model_dir, "host", build)
    interpreter = Interpreter(lce.convert_keras_model(model), num_threads=1)
    c_times, lce_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(build / "bnn")], capture_output=True, check=True)
        c_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for sample in x:
            interpreter.predict(sample[None])
        lce_times.append(time.perf_counter() - start)
    return {"images": len(x), "ratio_c_over_lce": statistics.median(c_times)
            / statistics.median(lce_times), "note": "C time includes process start"}


def models_for(dataset: str, ds):
    """Unpruned, shrunk, ternary and ternary-blocks mnist_bnn trained on ``ds``."""
    import tensorflow as tf

    from bnnprune_tf import models, prune, shrink, training

    tf.keras.utils.set_random_seed(0)
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, width=1.0)
    training.compile_model(model, 1e-2)
    training.fit(model, ds, 2, 64, verbose=0)
    out = {"unpruned": model}
    for name, make_pruned in [
        ("shrunk 50%", lambda: prune.prune_filters(model, "l1", ratio=SPARSITY)),
        ("ternary 50%", lambda: weight_masks(model, SPARSITY, blocks=False)),
        ("ternary blocks 50%", lambda: weight_masks(model, SPARSITY, blocks=True)),
    ]:
        pruned = make_pruned()
        training.compile_model(pruned, 1e-3)
        training.fit(pruned, ds, 1, 64, verbose=0)
        if name.startswith("shrunk"):
            pruned = shrink.shrink(pruned)
            training.compile_model(pruned, 1e-3)
        out[name] = pruned
    return out


def main():
    import bnnprune_tf  # noqa: F401

    from benchmarks.common import write_results
    from bnnprune_tf import data, training
    from converters import c_export, fold
    from converters import firmware as fw

    work = fw.FIRMWARE / "build/bench"
    rows, host = [], {}
    for dataset, limit in [("mnist5k", None), ("fashion_mnist", 10_000)]:
        ds = data.load(dataset, seed=0, limit=limit)
        x, y = ds.arrays("test", limit=100)
        for name, model in models_for(dataset, ds).items():
            directory = work / f"{dataset}_{name.replace(' ', '_').replace('%', '')}"
            info = c_export.write(model, directory, samples=x[:3], labels=y[:3])
            row = {"dataset": dataset, "model": name,
                   "accuracy": training.evaluate(model, ds, "test")["accuracy"],
                   "macs": binary_ops(fold.fold(prune.strip_pruning(model, keep_weight_masks=True))),
                   "weight_bytes": info["weight_bytes"], "arena_bytes": info["arena_bytes"],
                   "boards": {}}
            for board, core in BOARDS.items():
                build = directory.parent / f"{directory.name}_{board}"
                counts = fw.count_instructions(directory, board, build)
                row["boards"][board] = {"core": core, "instructions": counts,
                                        "per_inference": int(statistics.median(counts)),
                                        **fw.size(directory, board, build)}
            row["m4_builtin_popcount"] = int(statistics.median(fw.count_instructions(
                directory, "mps2-an386", directory.parent / f"{directory.name}_builtin",
                popcount="builtin")))
            rows.append(row)
            if not name.startswith("ternary"):             # LCE runs zero weights as float
                big = work / f"{directory.name}_host"
                c_export.write(model, big, samples=x, labels=y)
                host[f"{dataset} {name}"] = host_vs_lce(model, big, x)
    base = {r["dataset"]: r for r in rows if r["model"] == "unpruned"}
    for r in rows:
        b = base[r["dataset"]]
        r["ideal_ratio"] = b["macs"] / r["macs"]
        r["speedup"] = {board: b["boards"][board]["per_inference"]
                        / r["boards"][board]["per_inference"] for board in BOARDS}
    table = ["| data | model | test acc | core | instructions / inference | speedup | ideal | "
             "flash B | RAM B | weights B |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for board, b in r["boards"].items():
            table.append(f"| {r['dataset']} | {r['model']} | {r['accuracy']:.3f} | {b['core']} | "
                         f"{b['per_inference']:,} | {r['speedup'][board]:.2f}x | "
                         f"{r['ideal_ratio']:.2f}x | {b['flash']:,} | {b['ram']:,} | "
                         f"{r['weight_bytes']:,} |")
    notes = [
        "",
        "speedup: instructions of the unpruned model / this model's; ideal: the same ratio of "
        "MACs with nonzero weights. Ternary models keep every filter: their zeros cost a 2-bit "
        "slot class, and a mask word only in slots with some zeros.",
        "",
        "M4 popcount (SWAR vs `__builtin_popcount`, instructions / inference): " + "; ".join(
            f"{r['dataset']} {r['model']}: {r['boards']['mps2-an386']['per_inference']:,} vs "
            f"{r['m4_builtin_popcount']:,}" for r in rows) + ".",
        "",
        "Host (x86, gcc -O2) C runtime vs LCE interpreter, same 100 images, time ratio C/LCE: " +
        ", ".join(f"{k} {v['ratio_c_over_lce']:.2f}" for k, v in host.items()) +
        " (C time includes starting the process).",
    ]
    write_results("firmware", {"rows": rows, "sparsity": SPARSITY, "host_vs_lce": host},
                  "\n".join(table + notes), "python -m benchmarks.firmware")


if __name__ == "__main__":
    main()
