import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import models, training
from bnnprune_tf.errors import ModelError


class StopAfter(tf.keras.callbacks.Callback):
    """Simulates a crash after ``n`` finished epochs."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise KeyboardInterrupt("simulated interruption")


def _model(ds):
    model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, width=0.25)
    return training.compile_model(model, 1e-2)


def test_fit_learns_and_evaluates(mnist_small):
    model = _model(mnist_small)
    history = training.fit(model, mnist_small, epochs=3, batch_size=32, verbose=0)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    result = training.evaluate(model, mnist_small, "val")
    assert result["samples"] == len(mnist_small.y_val)
    assert result["accuracy"] > 0.5


def test_interrupted_fit_resumes_from_last_epoch(mnist_small, tmp_path):
    model = _model(mnist_small)
    with pytest.raises(KeyboardInterrupt):
        training.fit(model, mnist_small, epochs=4, batch_size=32, work_dir=tmp_path,
                     callbacks=[StopAfter(2)], verbose=0)
    assert (tmp_path / "backup").exists()
    seen = []
    record = tf.keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    fresh = _model(mnist_small)   # a new process would rebuild the model
    history = training.fit(fresh, mnist_small, epochs=4, batch_size=32, work_dir=tmp_path,
                           callbacks=[record], verbose=0)
    assert seen == [2, 3]                       # only the missing epochs ran
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert not (tmp_path / "backup").exists()
    # a finished fit in the same directory starts a new log
    again = training.fit(fresh, mnist_small, epochs=1, batch_size=32, work_dir=tmp_path,
                         verbose=0)
    assert [h["epoch"] for h in again] == [1]


def test_a_kill_right_after_an_epochs_backup_loses_no_log_row(mnist_small, tmp_path,
                                                               monkeypatch):
    """The process dies the moment epoch 2's backup is written (what SIGKILL can do): the
    resumed fit's history still holds every epoch, as the epoch's log row comes first."""
    class KilledAfterBackup(tf.keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 1:
                raise KeyboardInterrupt("killed after the backup")

    monkeypatch.setattr(tf.keras.callbacks, "BackupAndRestore", KilledAfterBackup)
    with pytest.raises(KeyboardInterrupt):
        training.fit(_model(mnist_small), mnist_small, epochs=3, batch_size=32,
                     work_dir=tmp_path, verbose=0)
    monkeypatch.undo()
    assert training.resumed_epoch(tmp_path / "backup") == 2
    history = training.fit(_model(mnist_small), mnist_small, epochs=3, batch_size=32,
                           work_dir=tmp_path, verbose=0)
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_cosine_decay_reaches_zero(mnist_small):
    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    training.compile_model(model, 0.01, decay_steps=100)
    lr = model.optimizer._learning_rate
    assert isinstance(lr, tf.keras.optimizers.schedules.CosineDecay)
    assert np.isclose(float(lr(0)), 0.01) and np.isclose(float(lr(100)), 0.0)
    assert training.steps_per_epoch(mnist_small, 64) == -(-len(mnist_small.y_train) // 64)


def test_errors(mnist_small):
    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    with pytest.raises(ModelError, match="compile the model first"):
        training.fit(model, mnist_small, epochs=1)
    with pytest.raises(ModelError, match="unknown optimizer 'adamw': use one of adam, sgd"):
        training.compile_model(model, optimizer="adamw")
