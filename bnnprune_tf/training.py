"""Train and evaluate a Keras BNN on a :class:`bnnprune_tf.data.Dataset`, resumably.

``fit`` is plain ``model.fit`` plus what a long run needs: a fixed seed, the
standard ``tf.keras.callbacks.BackupAndRestore`` (an interrupted fit restarts
from its last finished epoch, optimizer state included) and a CSV log of all
epochs across restarts.

:func:`train` is the one verb for "compile with a learning-rate schedule, then
fit"; :func:`compile_model` and :func:`fit` are its two halves.

Example::

    from bnnprune_tf import data, models, training
    ds = data.load("mnist5k")
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes)
    history = training.train(model, ds, epochs=2, learning_rate=1e-2,
                             work_dir="runs/demo/train")
    print(training.evaluate(model, ds, "test"))
"""

from __future__ import annotations

import csv
import numbers
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf import distribute
from bnnprune_tf.data import Dataset
from bnnprune_tf.errors import ModelError

OPTIMIZERS = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}
SCHEDULES = ("cosine", "constant")


def compile_model(model: tf.keras.Model, learning_rate: float = 1e-3, optimizer: str = "adam",
                  decay_steps: int | None = None):
    """Compile for integer labels with accuracy as metric.

    Args:
        decay_steps: if given, the learning rate follows a cosine decay to 0
            over this many steps (``epochs * batches per epoch``), which keeps
            latent weights from flipping back and forth at the end of training.
    """
    if optimizer not in OPTIMIZERS:
        raise ModelError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    lr = learning_rate
    if decay_steps:
        lr = tf.keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def fit(
    model: tf.keras.Model,
    dataset: Dataset,
    epochs: int,
    batch_size: int = 64,
    augment: Sequence[str] = (),
    seed: int = 0,
    work_dir: str | os.PathLike | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> list[dict]:
    """Fit a compiled ``model`` on the train split, validating on the val split.

    Training is deterministic: the seed fixes shuffling, augmentation and
    initial state, and TensorFlow's op determinism is turned on.

    Args:
        work_dir: if given, the fit is resumable: a backup lives in
            ``work_dir/backup`` until the fit finishes, and every epoch's
            metrics are appended to ``work_dir/history.csv``. Calling ``fit``
            again after an interruption continues where it stopped. Under a
            multi-worker strategy only the chief writes there (all workers
            must see the same ``work_dir``, e.g. on a shared file system).
        callbacks: extra Keras callbacks (pruning callbacks go here).

    Returns:
        One dict per epoch (``epoch``, ``loss``, ``accuracy``, ``val_loss``,
        ``val_accuracy``...), covering earlier interrupted attempts too.
    """
    if model.optimizer is None:
        raise ModelError("compile the model first (bnnprune_tf.training.compile_model)")
    check_fit(model, dataset, epochs, batch_size)
    tf.config.experimental.enable_op_determinism()     # same seed, same numbers
    tf.keras.utils.set_random_seed(seed)
    first = 0
    all_callbacks = list(callbacks)
    history_file = None
    chief = distribute.is_chief(model.distribute_strategy)
    if work_dir is not None:
        work_dir = Path(work_dir)
        backup = work_dir / "backup"
        # the chief writes the log; every worker restores from the chief's backup (Keras
        # keeps other workers' backup writes in temporary directories)
        history_file = work_dir / "history.csv" if chief else None
        if chief and not backup.exists() and history_file.exists():
            history_file.unlink()  # a finished or never-started fit: start the log anew
        first = distribute.resumable(min(resumed_epoch(backup), epochs))
        log = [tf.keras.callbacks.CSVLogger(os.fspath(history_file), append=True)] if chief else []
        # the epoch's log row before its backup: a process killed between the two then
        # reruns a logged epoch (read_history keeps its last row), never loses one
        all_callbacks = [*log, tf.keras.callbacks.BackupAndRestore(os.fspath(backup)),
                         *all_callbacks]
    # epoch e's batches depend on (seed, e) only: a resumed fit sees what an uninterrupted
    # one would have seen from its first missing epoch on
    train = dataset.epochs("train", batch_size, range(first, int(epochs)), augment=augment,
                           seed=seed)
    val = dataset.batches("val", batch_size)
    result = model.fit(train, validation_data=val, epochs=epochs, callbacks=all_callbacks,
                       steps_per_epoch=steps_per_epoch(dataset, batch_size), verbose=verbose)
    if work_dir is not None:
        distribute.barrier(model.distribute_strategy)   # other workers' last backup writes
    if history_file is None:
        return [{"epoch": e + 1, **{k: float(v[e]) for k, v in result.history.items()}}
                for e in range(len(result.epoch))]
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    return read_history(history_file)


def train(
    model: tf.keras.Model,
    dataset: Dataset,
    epochs: int,
    learning_rate: float = 1e-3,
    *,
    optimizer: str = "adam",
    schedule: str = "cosine",
    batch_size: int = 64,
    augment: Sequence[str] = (),
    seed: int = 0,
    work_dir: str | os.PathLike | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    verbose: int | str = 0,
) -> list[dict]:
    """Compile ``model`` (``schedule``: ``"cosine"`` decay to 0 over the ``epochs``,
    or ``"constant"``) and :func:`fit` it; returns the per-epoch history.

    Example::

        history = train(model, ds, epochs=10, learning_rate=1e-2, callbacks=[pruner])
    """
    if schedule not in SCHEDULES:
        raise ModelError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if not learning_rate > 0:      # also NaN
        raise ModelError(f"learning_rate must be > 0, got {learning_rate}")
    check_fit(model, dataset, epochs, batch_size)
    decay = epochs * steps_per_epoch(dataset, batch_size) if schedule == "cosine" else None
    compile_model(model, learning_rate, optimizer, decay_steps=decay)
    return fit(model, dataset, epochs, batch_size, augment=augment, seed=seed, work_dir=work_dir,
               callbacks=callbacks, verbose=verbose)


def check_fit(model: tf.keras.Model, dataset: Dataset, epochs: int, batch_size: int) -> None:
    """Clear errors, before any work, for settings a ``fit`` would not survive."""
    if not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ModelError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ModelError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if len(dataset.split("train")[1]) == 0:
        raise ModelError(f"{dataset.name}: the train split is empty; raise limit")
    outputs = model.outputs[0].shape[-1] if model.outputs else None
    if outputs is not None and dataset.num_classes > outputs:
        raise ModelError(f"{dataset.name} has labels up to {dataset.num_classes - 1} but the "
                         f"model has {outputs} outputs: build it with num_classes="
                         f"{dataset.num_classes} (labels must be < the number of outputs)")


def resumed_epoch(backup: str | os.PathLike) -> int:
    """The first epoch a fit resumed from the ``BackupAndRestore`` directory ``backup``
    runs (0 if there is no backup)."""
    checkpoint = tf.train.latest_checkpoint(os.fspath(Path(backup) / "chief"))
    if checkpoint is None:
        return 0
    saved = tf.train.load_checkpoint(checkpoint).get_tensor(
        "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")
    return int(saved) + 1


def read_history(path: str | os.PathLike) -> list[dict]:
    """Epoch rows (epochs counted from 1) of a CSVLogger file; a repeated epoch
    keeps its last row."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(row.pop("epoch")) + 1
            rows[epoch] = {"epoch": epoch, **{k: float(v) for k, v in row.items()}}
    return [rows[e] for e in sorted(rows)]


def steps_per_epoch(dataset: Dataset, batch_size: int) -> int:
    return -(-len(dataset.split("train")[1]) // batch_size)


def count_correct(model: tf.keras.Model, dataset: Dataset, split: str = "val",
                  batch_size: int = 256) -> int:
    """How many images of ``split`` ``model`` classifies correctly (argmax), as an integer:
    accuracy budgets compare these counts, never floats at an edge."""
    x, y = dataset.arrays(split)
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return int(np.sum(np.argmax(predictions, axis=-1) == y))


def evaluate(model: tf.keras.Model, dataset: Dataset, split: str = "test",
             batch_size: int = 256) -> dict:
    """``{"loss", "accuracy", "samples"}`` of a compiled model on ``split``."""
    loss, accuracy = model.evaluate(dataset.batches(split, batch_size), verbose=0)[:2]
    return {"loss": float(loss), "accuracy": float(accuracy),
            "samples": int(len(dataset.split(split)[1]))}
