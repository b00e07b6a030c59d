"""The evaluation protocol (``../shared/reference/evaluation.md``) as code, shared by the
method benchmarks: the data split, the dense checkpoint, cached cells, rows, paired statistics.

- :func:`dataset` -- Fashion-MNIST: 20,000 training images (fixed by the seed), 6,000
  validation images from the rest of the training split, the official 10,000 test images;
- :func:`dense` -- ``vgg_small`` at width 1/4 trained ``epochs`` (Adam, cosine, no
  augmentation), cached as a ``.keras`` file under ``benchmarks/cache/`` by a hash of its inputs
  (:func:`checkpoint`);
- :func:`prelude` -- a checkpoint trained further as WFF measures (latent decay), cached, so
  a control and baselines can start where WFF's rounds start;
- :func:`cell` -- one (arm, config, seed) result, cached as JSON by a hash of its inputs, so a
  benchmark resumes where it stopped and a part of it can be rerun;
- :func:`measure` -- a final model's row: binary MACs and parameters (nonzero weights only), the
  validation count, the test accuracy and its per-image correctness (for paired statistics);
- :func:`mcnemar` and :func:`summarize` -- paired differences to the dense control of the same
  seed and an exact McNemar test over the pooled test predictions of all seeds.

Example::

    from benchmarks import protocol

    ds = protocol.dataset(seed=0)
    base = protocol.dense(ds, seed=0, epochs=4, learning_rate=1e-3)
    row = protocol.control(ds, base, seed=0, dense_epochs=4, epochs_after=2, learning_rate=1e-4)
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import statistics
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)
import tensorflow as tf

from bnnprune_tf import data, files, methods, models, profile, training
from bnnprune_tf.methods import flip_frequency

CACHE = Path(__file__).resolve().parent / "cache"
SETUP = {"data": "fashion_mnist", "train_images": 20000, "val_images": 6000,
         "test_images": 10000, "model": "vgg_small", "width": 0.25, "optimizer": "adam",
         "schedule": "cosine", "augment": False, "batch_size": 64}


def dataset(seed: int) -> data.Dataset:
    """The protocol's split for ``seed`` (the training subset is fixed by the seed)."""
    full = data.load(SETUP["data"], seed=seed, val_fraction=SETUP["val_images"] / 60000)
    return dataclasses.replace(full, x_train=full.x_train[:SETUP["train_images"]],
                               y_train=full.y_train[:SETUP["train_images"]])


def key_hash(key: Mapping) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def train(model: tf.keras.Model, ds: data.Dataset, epochs: int, learning_rate: float,
          seed: int, callbacks=()) -> None:
    """Train ``model`` in place the protocol's way (Adam, cosine to 0, no augmentation)."""
    if epochs:
        training.train(model, ds, epochs, learning_rate, optimizer=SETUP["optimizer"],
                       schedule=SETUP["schedule"], batch_size=SETUP["batch_size"], seed=seed,
                       callbacks=callbacks)


def dense(ds: data.Dataset, seed: int, epochs: int, learning_rate: float,
          width: float | None = None, model: str | None = None) -> tf.keras.Model:
    """The dense checkpoint: ``model`` at ``width`` (default the protocol's ``vgg_small`` at
    1/4) trained ``epochs`` from a seeded init (cached)."""
    name, width = model or SETUP["model"], width or SETUP["width"]

    def make():
        built = models.build(name, ds.input_shape, ds.num_classes, width, seed=seed)
        train(built, ds, epochs, learning_rate, seed)
        return built

    return checkpoint({"what": "dense", **SETUP, "model": name, "width": width, "seed": seed,
                       "epochs": epochs, "learning_rate": learning_rate}, make)


def checkpoint(key: Mapping, make: Callable[[], tf.keras.Model]) -> tf.keras.Model:
    """``make()`` once per ``key`` (every input of the model, JSON-able), cached as a
    ``.keras`` file under ``benchmarks/cache/`` named by the hash of ``key``."""
    path = CACHE / f"{key['what']}-{key_hash(key)}.keras"
    if path.exists():
        return tf.keras.models.load_model(path)
    model = make()
    files.save_model(model, path)
    return model


def prelude(ds: data.Dataset, base: tf.keras.Model, seed: int, epochs: int,
            learning_rate: float, decay: float, key: Mapping) -> tf.keras.Model:
    """``base`` trained ``epochs`` more at ``learning_rate`` with coupled L2 ``decay`` on its
    latent weights (WFF's measuring interval), cached; ``key`` names ``base``'s inputs."""
    def make():
        model = flip_frequency.add_latent_decay(models.copy_model(base), decay)
        train(model, ds, epochs, learning_rate, seed)
        return model

    return checkpoint({**key, "what": "prelude", "seed": seed, "prelude": {
        "epochs": epochs, "learning_rate": learning_rate, "decay": decay}}, make)


def with_decay(cls: type, decay: float) -> type:
    """Method class ``cls`` whose training adds that decay (to train a baseline as WFF's
    rounds train); ``cls`` must have no loss term of its own."""
    if cls.loss is not methods.Method.loss:
        raise ValueError(f"{cls.name} has a loss term of its own: the decay would replace it")
    return type(cls.__name__, (cls,), {"loss": lambda self, m: flip_frequency.latent_decay(
        m, decay)})


def cell_path(key: Mapping, suffix: str = ".json"):
    """Where the cell of ``key`` keeps its row (``.json``) or another of its files.

    Example::

        cell_path(key, ".tflite").write_bytes(flatbuffer)
    """
    return CACHE / "cells" / f"{key_hash(key)}{suffix}"


def cell(key: Mapping, compute: Callable[[], dict], log=print) -> dict:
    """``compute()`` once per ``key`` (a JSON-able dict of every input of the cell); the row is
    cached in ``benchmarks/cache/cells/`` and returned with ``key`` merged in."""
    path = cell_path(key)
    if path.exists():
        return json.loads(path.read_text())
    row = {**key, **compute()}
    files.write_json(path, row)
    log({k: v for k, v in row.items() if k != "test_correct"})
    return row


def control(ds: data.Dataset, base: tf.keras.Model, seed: int, dense_epochs: int,
            epochs_after: int, learning_rate: float) -> dict:
    """The dense control's row: the checkpoint ``base`` trained ``epochs_after`` more epochs
    (cached; every benchmark with the same inputs shares it)."""
    def compute():
        model = models.copy_model(base)
        train(model, ds, epochs_after, learning_rate, seed)
        return {"method": "dense", "config": {}, "epochs_total": dense_epochs + epochs_after,
                **measure(model, ds)}

    return cell({"what": "control", **SETUP, "seed": seed, "arm": "dense",
                 "dense_epochs": dense_epochs, "epochs_after": epochs_after,
                 "learning_rate": learning_rate}, compute)


def _pack(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(correct.astype(np.uint8)).tobytes()).decode()


def unpack(bits: str, n: int) -> np.ndarray:
    """Per-image correctness stored by :func:`measure` (``row["test_correct"]``)."""
    return np.unpackbits(np.frombuffer(base64.b64decode(bits), np.uint8))[:n].astype(bool)


def correct(model: tf.keras.Model, ds: data.Dataset, split: str) -> np.ndarray:
    x, y = ds.arrays(split)
    return np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y


def measure(model: tf.keras.Model, ds: data.Dataset, masked: tf.keras.Model | None = None) -> dict:
    """A final model's costs and accuracies; costs from its ``masked`` twin if given (a
    weight-level result: only the nonzero weights inside kept filters count)."""
    cost = profile.profile(masked if masked is not None else model)
    val, test = correct(model, ds, "val"), correct(model, ds, "test")
    return {"binary_macs": int(cost.binary_macs), "binary_params": int(cost.binary_params),
            "ternary_macs": int(cost.ternary_macs), "float_macs": int(cost.float_macs),
            "val_correct": int(val.sum()), "val_accuracy": float(val.mean()),
            "test_accuracy": float(test.mean()), "test_correct": _pack(test)}


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact two-sided McNemar test of paired per-image correctness ``a`` vs ``b``:
    ``a_only`` images only A gets right, ``b_only`` only B; ``p`` the binomial p-value."""
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": min(1.0, 2 * tail)}


def _pooled(rows: Sequence[dict]) -> np.ndarray:
    return np.concatenate([unpack(r["test_correct"], SETUP["test_images"])
                           for r in sorted(rows, key=lambda r: r["seed"])])


def summarize(rows: Sequence[dict], control: str, comparisons: Mapping[str, Sequence[str]],
              alpha: float = 0.05) -> list[dict]:
    """One summary row per arm: mean reductions against the control of the same seed,
    ``test_loss_points`` (control accuracy - arm accuracy, points; mean and sd over seeds),
    and, for each arm in ``comparisons[arm]`` (compared at equal cost), whether the arm
    ``beats`` it, ``ties`` (no measurable difference) or ``loses`` (McNemar on the pooled
    test predictions of the seeds both have, p < ``alpha``)."""
    by_arm: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    controls = by_arm[control]
    out = []
    for arm, seeds in by_arm.items():
        paired = [s for s in sorted(seeds) if s in controls]
        loss = [100 * (controls[s]["test_accuracy"] - seeds[s]["test_accuracy"]) for s in paired]
        first = seeds[min(seeds)]
        summary = {"method": first["method"], "arm": arm, "config": first["config"],
                   "seeds": len(seeds), "epochs_total": first["epochs_total"],
                   "test_accuracy": statistics.mean(r["test_accuracy"] for r in seeds.values())}
        for cost in ("binary_macs", "binary_params"):
            summary[f"{cost}_reduction"] = statistics.mean(
                1 - seeds[s][cost] / controls[s][cost] for s in paired)
        summary["test_loss_points"] = statistics.mean(loss)
        summary["test_loss_points_sd"] = statistics.stdev(loss) if len(loss) > 1 else 0.0
        if arm != control:
            summary["vs_control"] = mcnemar(_pooled([seeds[s] for s in paired]),
                                            _pooled([controls[s] for s in paired]))
        verdicts = {"beats": [], "ties": [], "loses": []}
        for other in comparisons.get(arm, ()):
            common = [s for s in sorted(seeds) if s in by_arm.get(other, {})]
            if not common:
                continue
            test = mcnemar(_pooled([seeds[s] for s in common]),
                           _pooled([by_arm[other][s] for s in common]))
            verdict = "ties" if test["p"] >= alpha else \
                ("beats" if test["a_only"] > test["b_only"] else "loses")
            verdicts[verdict].append(other)
            summary.setdefault("tests", {})[other] = test
        summary.update(verdicts)
        out.append(summary)
    return out


STATISTICS = ("Test loss = dense control accuracy - arm accuracy (points), paired per seed; "
              "beats / ties / loses: exact McNemar on the pooled test predictions of the seeds, "
              "p < 0.05.")


def preamble(epochs: int, learning_rate: float) -> str:
    """The setup sentence every protocol results table opens with."""
    return (f"Protocol: Fashion-MNIST {SETUP['train_images']} / {SETUP['val_images']} / "
            f"{SETUP['test_images']}, `{SETUP['model']}` width {SETUP['width']}, dense "
            f"checkpoint {epochs} epochs (Adam, cosine, lr {learning_rate}).")


def summary_table(summaries: Sequence[dict]) -> str:
    """The summary rows as a markdown table."""
    lines = ["| arm | seeds | epochs | test acc | binary MACs cut | binary params cut "
             "| test loss (points, mean ± sd) | p vs control | beats | ties | loses |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for s in summaries:
        p = s.get("vs_control", {}).get("p")
        lines.append(
            f"| {s['arm']} | {s['seeds']} | {s['epochs_total']} | {s['test_accuracy']:.4f} "
            f"| {s['binary_macs_reduction']:.1%} | {s['binary_params_reduction']:.1%} "
            f"| {s['test_loss_points']:+.2f} ± {s['test_loss_points_sd']:.2f} "
            f"| {'' if p is None else f'{p:.3g}'} | {', '.join(s['beats'])} "
            f"| {', '.join(s['ties'])} | {', '.join(s['loses'])} |")
    return "\n".join(lines)


def per_seed_table(rows: Sequence[dict], extra: Mapping[str, Callable[[dict], object]] = {}) -> str:
    """Every row (seed, arm, epochs, binary MACs, validation count, test accuracy, and the
    ``extra`` columns) as a markdown table."""
    names = ["seed", "arm", "epochs", "binary MACs", "val correct", "test acc", *extra]
    lines = ["| " + " | ".join(names) + " |", "|---:|---|" + "---:|" * 4 + "---|" * len(extra)]
    for r in sorted(rows, key=lambda r: (r["seed"], r["arm"])):
        cells = [r["seed"], r["arm"], r["epochs_total"], f"{r['binary_macs']:,}",
                 r["val_correct"], f"{r['test_accuracy']:.4f}", *(f(r) for f in extra.values())]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
