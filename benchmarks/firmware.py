"""Instructions per inference of the C runtime on Cortex-M4/M7/M55 under QEMU.

The MNIST BNN (``mnist_bnn``, width 1) trained 5 epochs on mnist5k, then three pruned
versions, each fine-tuned 1 epoch:

- shrunk 50%: 50 % of the filters of every prunable group removed by L1 norm;
- ternary 50%: 50 % of the binary weights masked by smallest latent magnitude
  (unstructured), kept as zeros: scattered, they leave no word empty, so the exporter
  stores each word's signs and nonzero mask (``BNN_BCONV_MASKED``);
- ternary blocks 50%: 50 % of the words (32 input channels of one tap of one filter)
  masked by smallest mean latent magnitude: what the word lists skip (only nonzero
  words stored and visited).

For each model and board: instructions per inference (exact, the project's TCG plugin,
``converters.firmware.count_instructions``), instructions per layer
(``converters.firmware.profile``), the footprint from ``arm-none-eabi-size``
(flash = text + data, RAM = data + bss), test accuracy in Keras. Binary MACs count the
binary convs' multiply-accumulates with nonzero weights; the ideal speedup of a pruned
model is its ratio of all MACs with nonzero weights (binary ones plus the first layer's
int8 ones) to the unpruned model's, as in earlier results. On this host, the C runtime
(``make lib``, called through ctypes) and the LCE interpreter run the same model on the
same 100 images in the same process, interleaved; their time ratio is reported (no
absolute times). Everything runs from fixed seeds.

Run: ``python -m benchmarks.firmware`` (needs gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm). ``--work DIR`` keeps the trained models there and reuses them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

SPARSITY = 0.5
EPOCHS = 5
SAMPLES = 3                       # test vectors in the firmware (they are in its flash)
BASE = "unpruned"


def macs(folded) -> dict:
    """Multiply-accumulates with nonzero weights: ``binary`` (binary convs) and ``all``
    (plus the int8 first layer)."""
    from converters import fold

    binary = first = 0
    x = np.zeros((1, *folded.input_shape), np.int8)
    for layer in folded.layers:
        y = layer(x)
        if isinstance(layer, fold.Conv):
            n = int(np.prod(y.shape[1:3])) * int(np.count_nonzero(layer.weights))
            if layer.input_scale == 1.0:
                binary += n
            else:
                first += n
        x = y
    return {"binary": binary, "all": binary + first}


def word_kinds(folded) -> dict:
    """The binary convs' filter words (32 weights of one filter's bit stream) that hold no
    nonzero weight (``empty``: the word lists skip them), only nonzeros (``full``) or
    both (``partial``: they need a mask)."""
    from converters import c_export, fold

    kinds = {"empty": 0, "full": 0, "partial": 0}
    for layer in folded.layers:
        if isinstance(layer, fold.Conv) and layer.input_scale == 1.0:
            t = c_export.ternary_stream(layer.weights)
            full, partial = int(t["counts"][0::2].sum()), int(t["counts"][1::2].sum())
            total = layer.weights.shape[0] * c_export.words(int(np.prod(layer.weights.shape[1:])))
            kinds["full"] += full
            kinds["partial"] += partial
            kinds["empty"] += total - full - partial
    return kinds


def weight_masks(model, sparsity: float, blocks: bool):
    """A masked copy of ``model`` with ``sparsity`` of each binary conv's weights masked by
    smallest latent magnitude: single weights, or whole words of 32 input channels."""
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


def trained_models(ds, work: Path) -> dict:
    """Unpruned, shrunk, ternary and ternary-blocks mnist_bnn, trained (or reloaded from
    ``work``)."""
    import tensorflow as tf

    from bnnprune_tf import models, prune, shrink, training

    names = [BASE, "shrunk 50%", "ternary 50%", "ternary blocks 50%"]
    paths = {name: work / (name.replace(" ", "_").replace("%", "") + ".keras") for name in names}
    if all(p.exists() for p in paths.values()):
        out = {n: tf.keras.models.load_model(p, compile=False) for n, p in paths.items()}
        for model in out.values():
            training.compile_model(model, 1e-3)
        return out
    work.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, width=1.0)
    training.compile_model(model, 1e-2)
    training.fit(model, ds, EPOCHS, 64, verbose=0)
    out = {BASE: model}
    for name, make_pruned in [
        ("shrunk 50%", lambda: prune.prune_filters(model, "l1", ratio=SPARSITY)),
        ("ternary 50%", lambda: weight_masks(model, SPARSITY, blocks=False)),
        ("ternary blocks 50%", lambda: weight_masks(model, SPARSITY, blocks=True)),
    ]:
        tf.keras.utils.set_random_seed(1)
        pruned = make_pruned()
        training.compile_model(pruned, 1e-3)
        training.fit(pruned, ds, 1, 64, verbose=0)
        if name.startswith("shrunk"):
            pruned = shrink.shrink(pruned)
            training.compile_model(pruned, 1e-3)
        out[name] = pruned
    for name, model in out.items():
        model.save(paths[name])
    return out


def host_vs_lce(model, model_dir: Path, x) -> dict:
    """Time ratio C runtime (host gcc -O2, ctypes, in process) / LCE interpreter on the
    same images, 7 interleaved rounds, medians; the C sums checked against Python's."""
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from bnnprune_tf import prune
    from converters import fold
    from converters import firmware as fw

    folded = fold.fold(prune.strip_pruning(model, keep_weight_masks=True))
    codes = folded.quantize_input(x)
    lib = fw.HostLibrary(model_dir, model_dir / "host-lib")
    exact = bool(np.array_equal(lib.sums(codes), folded.output.sums(folded.hidden(codes))
                                .reshape(len(x), -1)))
    interpreter = Interpreter(lce.convert_keras_model(model), num_threads=1)
    c_times, lce_times = [], []
    for _ in range(7):
        start = time.perf_counter()
        lib.sums(codes)
        c_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for sample in x:
            interpreter.predict(sample[None])
        lce_times.append(time.perf_counter() - start)
    return {"images": len(x), "exact": exact,
            "ratio_c_over_lce": statistics.median(c_times) / statistics.median(lce_times)}


def measure(name, model, ds, x, y, directory: Path) -> list[dict]:
    """One row per QEMU board: instructions, MACs, footprint, per-layer profile."""
    from bnnprune_tf import prune, training
    from converters import c_export, fold
    from converters import firmware as fw

    info = c_export.write(model, directory, samples=x[:SAMPLES], labels=y[:SAMPLES])
    folded = fold.fold(prune.strip_pruning(model, keep_weight_masks=True))
    count, words = macs(folded), word_kinds(folded)
    accuracy = training.evaluate(model, ds, "test")["accuracy"]
    rows = []
    for board, core in fw.QEMU_BOARDS.items():
        build = directory / board
        instructions = int(statistics.median(fw.count_instructions(directory, board, build)))
        size = fw.size(directory, board, build)
        profile = fw.profile(directory, board, directory / f"{board}-profile")
        binary = [layer for layer in profile["layers"] if layer["op"] in ("binary", "output")]
        rows.append({"model": name, "core": core, "board": board, "instructions": instructions,
                     "binary_macs": count["binary"], "flash_bytes": size["flash"],
                     "ram_bytes": size["ram"], "all_macs": count["all"], "accuracy": accuracy,
                     "weight_bytes": info["weight_bytes"], "filter_words": words,
                     "per_binary_mac": instructions / count["binary"],
                     "binary_convs_per_mac": sum(layer["instructions"] for layer in binary)
                     / sum(layer["macs"] for layer in binary),
                     "layers": profile["layers"]})
    return rows


def markdown(rows, host) -> str:
    table = ["| model | test acc | core | instructions / inference | per binary MAC "
             "(binary convs) | speedup | ideal | speedup / ideal | flash B | RAM B |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['accuracy']:.3f} | {r['core']} | "
                     f"{r['instructions']:,} | {r['per_binary_mac']:.3f} "
                     f"({r['binary_convs_per_mac']:.3f}) | {r['speedup']:.2f}x | "
                     f"{r['ideal']:.2f}x | {r['speedup'] / r['ideal']:.2f} | "
                     f"{r['flash_bytes']:,} | {r['ram_bytes']:,} |")
    layers = ["| model | core | " + " | ".join(
        f"{layer['op']} {'x'.join(map(str, layer['out']))}" for layer in rows[0]["layers"])
        + " |", "|---|---|" + "---|" * len(rows[0]["layers"])]
    for r in rows:
        if r["core"] != "Cortex-M4" or len(r["layers"]) != len(rows[0]["layers"]):
            continue
        layers.append(f"| {r['model']} | {r['core']} | " + " | ".join(
            f"{layer['instructions']:,}" + (f" ({layer['per_mac']:.3f}/MAC)" if layer["macs"]
                                           else "") for layer in r["layers"]) + " |")
    return "\n".join(table + [
        "",
        "speedup: instructions of the unpruned model / this model's, same core; ideal: the "
        "same ratio of MACs with nonzero weights (binary + first layer). Per binary MAC: "
        "instructions of the whole inference / binary MACs with nonzero weights; in brackets "
        "the binary convs' own instructions / their MACs (from the per-layer profile, which "
        "counts the zero weights of ternary layers too).",
        "",
        "Per layer, Cortex-M4 (`bnnprune firmware run --profile`; output shape, instructions, "
        "per MAC; shrunk models have other shapes and are in the JSON):",
        "",
        *layers,
        "",
        "Filter words of the binary convs (32 weights each), empty / full / partial (a "
        "partial word mixes zeros and nonzeros, so it needs a mask; only empty words can be "
        "skipped): " + "; ".join(
            f"{r['model']} {r['filter_words']['empty']:,} / {r['filter_words']['full']:,} / "
            f"{r['filter_words']['partial']:,}" for r in rows if r["core"] == "Cortex-M4") + ".",
        "",
        "Host (x86, gcc -O2, `make lib` via ctypes) vs LCE interpreter, in process, same 100 "
        "test images, time ratio C/LCE (< 1: the C runtime is faster): " +
        ", ".join(f"{k} {v['ratio_c_over_lce']:.2f} (exact: {v['exact']})"
                  for k, v in host.items()) + "."])


def main(argv=None):
    import bnnprune_tf  # noqa: F401

    from benchmarks.common import write_results
    from bnnprune_tf import data
    from converters import firmware as fw

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--work", type=Path, default=fw.FIRMWARE / "build/bench")
    args = args.parse_args(argv)
    ds = data.load("mnist5k", seed=0)
    x, y = ds.arrays("test", limit=100)
    rows, host = [], {}
    for name, model in trained_models(ds, args.work).items():
        directory = args.work / name.replace(" ", "_").replace("%", "")
        rows += measure(name, model, ds, x, y, directory)
        if not name.startswith("ternary"):             # LCE runs zero weights as float
            host[name] = host_vs_lce(model, directory, x)
    base = {r["core"]: r for r in rows if r["model"] == BASE}
    for r in rows:
        r["speedup"] = base[r["core"]]["instructions"] / r["instructions"]
        r["ideal"] = base[r["core"]]["all_macs"] / r["all_macs"]
    write_results("firmware", {"rows": rows, "sparsity": SPARSITY, "epochs": EPOCHS,
                               "host_vs_lce": host},
                  markdown(rows, host), "python -m benchmarks.firmware")


if __name__ == "__main__":
    main()
