"""Weight-flipping-frequency pruning (Li & Ren, ISQED 2020; US patent 12387101).

What the method measures: how often each latent weight's binarized sign
changes (Larq convention ``sign(0) = +1``) during a *pruning interval* near the
end of training. Weights that flip often are insensitive to accuracy. Per
binary layer ``p_l`` is the share of weights with more than ``T`` flips, and
the layer's width becomes ``C'_l = round((1 - p_l) * C_l)``; the filters
removed are those with the highest mean flip frequency (ties: smallest mean
|latent|). Then the narrower network is fine-tuned or retrained from scratch
(the official code's reading), and the whole thing repeats until ``max_l p_l``
stops falling or the accuracy budget is spent. Details and what is inferred:
``../shared/reference/methods.md`` section 1.

Four forms:

- :class:`FlipTracker`, a callback that counts flips (per epoch as in the
  paper's code, or every N steps) in non-trainable variables, vectorized in a
  ``tf.function``; counts are checkpointable (:class:`FlipCounter` is a
  ``tf.Module``) and logged to TensorBoard;
- :class:`PruneByFlipFrequency`, the tracker plus the pruning rule applied to a
  masked model at the end of ``fit``;
- :func:`prune_by_flip_frequency`, the whole iterative procedure in one call;
- :class:`FlipFrequency`, the method registered as ``wff`` (the recipe's
  ``prune: {method: wff}``), whose ``run`` is that procedure.

Example::

    from bnnprune_tf import data, methods, models, training

    ds = data.load("mnist5k")
    model = models.build("mnist_bnn", ds.input_shape)
    method = methods.get("wff")(interval=4, threshold=0, round_to=8)
    masked = method.prepare(model)
    training.train(masked, ds, epochs=10, learning_rate=1e-2, callbacks=method.callbacks())
    result = method.finalize(masked)
    print(result.metrics["widths"])      # {layer: (before, after)}
    small = result.model                 # shrunk
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import tensorflow as tf

from pydantic import Field, model_validator

from bnnprune_tf import distribute, files, layer_facts, masks, profile, select, training
from bnnprune_tf.models import copy_model
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.methods.registry import register
from bnnprune_tf.methods.base import Context, Method, Params, Result, RoundTo
from bnnprune_tf.prune import kept_widths, prune_filters, strip_pruning
from bnnprune_tf.reporting import Figure
from bnnprune_tf.shrink import shrink


class FlipCounter(tf.Module):
    """Per-weight counts of sign flips between consecutive samples of latent kernels.

    ``counts[i]`` has the shape of layer i's kernel; ``samples`` is the number
    of snapshots taken (so a count is at most ``samples - 1``). A checkpoint of
    the counter holds the counts only, never the model's kernels.

    Example::

        counter = FlipCounter(layer_facts.binary_kernel_layers(model))
        counter.sample()          # after each epoch (or every N steps)
        tf.train.Checkpoint(flips=counter).save("ckpt/flips")
    """

    def __init__(self, layers):
        super().__init__(name="flip_counter")
        if not layers:
            raise ModelError("no layer with a binary kernel to count flips on")
        self.layer_names = [l.name for l in layers]
        self._kernels = _Untracked([layer_facts.latent_kernel(l) for l in layers])
        self.counts = [tf.Variable(tf.zeros(k.shape, tf.int32), trainable=False,
                                   name=f"{n}_flips") for k, n in zip(self._kernels, self.layer_names)]
        # bool, not int8: MultiWorkerMirroredStrategy broadcasts initial values with a
        # collective that has no int8 kernel
        self.last_sign = [tf.Variable(tf.zeros(k.shape, tf.bool), trainable=False,
                                      name=f"{n}_sign") for k, n in zip(self._kernels, self.layer_names)]
        self.samples = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples")

    @tf.function
    def sample(self):
        """Take a snapshot: count weights whose sign differs from the last snapshot."""
        counting = self.samples > 0
        for kernel, count, last in zip(self._kernels, self.counts, self.last_sign):
            sign = tf.convert_to_tensor(kernel) >= 0                     # sign(0) = +1
            flipped = tf.logical_and(counting, tf.not_equal(sign, last))
            count.assign_add(tf.cast(flipped, tf.int32))
            last.assign(sign)
        self.samples.assign_add(1)

    def reset(self) -> None:
        for v in self.counts + self.last_sign:
            v.assign(tf.zeros_like(v))
        self.samples.assign(0)

    def counts_numpy(self) -> dict[str, np.ndarray]:
        return {n: c.numpy() for n, c in zip(self.layer_names, self.counts)}


class _Untracked(list):
    """A list that checkpoints do not follow: tf's tracking wraps exactly ``list``, not
    subclasses, so a counter's checkpoint never holds (or restores) the model's kernels."""


@dataclass(frozen=True)
class LayerFlips:
    """Flip statistics of one layer over the interval."""

    name: str
    p: float                          # share of weights with more than T flips
    histogram: list[int]              # histogram[k] = weights with exactly k flips
    filter_mean: np.ndarray = field(repr=False)   # mean flips per weight, per filter

    def to_dict(self) -> dict:
        return {"p": self.p, "histogram": self.histogram,
                "filter_mean": [round(float(v), 4) for v in self.filter_mean]}


def layer_stats(counter: FlipCounter, threshold: float = 0,
                model: tf.keras.Model | None = None) -> dict[str, LayerFlips]:
    """``p_l``, the flip histogram and per-filter mean flips of every counted layer.

    Given the (masked) ``model``, weights already pruned (frozen, so they never
    flip) do not count: ``p_l`` is a share of the live weights.
    """
    out = {}
    for name, counts in counter.counts_numpy().items():
        live = np.ones(counts.shape, bool)
        if model is not None and masks.is_masked(model.get_layer(name)):
            live = np.asarray(model.get_layer(name).full_mask()) > 0
        n = counts.shape[-1]
        alive = live.reshape(-1, n).sum(0)
        totals = np.where(live, counts, 0).reshape(-1, n).sum(0)
        out[name] = LayerFlips(
            name=name, p=float(np.mean(counts[live] > threshold)) if live.any() else 0.0,
            histogram=np.bincount(counts[live].ravel(), minlength=1).tolist(),
            filter_mean=np.divide(totals, alive, out=np.zeros(n), where=alive > 0))
    return out


def flip_criterion(counter: FlipCounter | Mapping[str, np.ndarray]) -> select.Criterion:
    """Filter scores for :func:`bnnprune_tf.prune.prune_filters`: fewer flips = more important.

    Score = ``-(total flips of the filter) + mean|latent| / 2``; as flip totals
    are integers and ``|latent| <= 1``, the latent term only breaks ties (the
    smaller mean |latent| goes first). Layers without counts score 0.
    """
    counts = counter if isinstance(counter, Mapping) else counter.counts_numpy()

    def score(layer) -> np.ndarray:
        if layer.name not in counts:          # not counted (e.g. the float-input first layer):
            return np.zeros(int(layer.output.shape[-1]))   # neutral in a shared group
        c = counts[layer.name]
        latent = np.abs(np.asarray(layer_facts.latent_kernel(layer)))
        return -c.reshape(-1, c.shape[-1]).sum(0) + latent.reshape(-1, c.shape[-1]).mean(0) / 2

    return score


def flip_layers(model: tf.keras.Model, include_float_input: bool = False) -> list:
    """The layers whose flips are counted: binary kernels with a binary input (the paper's
    binary layers); ``include_float_input`` adds a float-input first layer."""
    return [l for l in layer_facts.binary_kernel_layers(model)
            if include_float_input or layer_facts.is_binary_input(l)]


def widths_from_flips(model: tf.keras.Model, stats: Mapping[str, LayerFlips],
                      graph: ChannelGraph | None = None,
                      include_float_input: bool = False) -> dict[str, int]:
    """``C'_l = round((1 - p_l) * C_l)`` (at least 1) for every layer WFF prunes: a
    counted layer with a prunable channel group of its own (so not the classifier), and
    no float input unless ``include_float_input``. ``C_l`` is the kept width."""
    graph = graph or ChannelGraph(model)
    kept = kept_widths(model)
    pruned = {l.name for l in flip_layers(model, include_float_input)}
    widths = {}
    for name, s in stats.items():
        groups = graph.groups_of(name)
        if name in pruned and len(groups) == 1 and groups[0].prunable:
            widths[name] = max(1, int(round((1.0 - s.p) * kept[name])))
    return widths


def round_widths(model: tf.keras.Model, widths: Mapping[str, int], round_to,
                 graph: ChannelGraph | None = None) -> dict[str, int]:
    """``widths`` rounded to the NEAREST multiple ``round_to`` asks
    (:func:`bnnprune_tf.select.multiple_of`): never more than one block from the
    ``p_l`` width, at least one block, at most the kept width."""
    if round_to is None:
        return dict(widths)
    graph = graph or ChannelGraph(model)
    kept = kept_widths(model)
    out = {}
    for name, width in widths.items():
        multiple = select.multiple_of(graph, graph.groups_of(name)[0], round_to)
        out[name] = min(kept[name], max(multiple, int(round(width / multiple)) * multiple))
    return out


class FlipTracker(tf.keras.callbacks.Callback):
    """Count per-weight sign flips of every binary layer during ``fit``.

    Args:
        last_epochs: the interval is the last K epochs of this ``fit``; or give
        epochs: ``(first, last)`` epochs (0-based, inclusive); or give
        steps: ``(first, last)`` optimizer steps (inclusive).
        every: ``"epoch"`` (snapshot at every epoch end, as the paper's code)
            or an int N (a snapshot every N steps).
        threshold: ``T`` of ``p_l`` (more than T flips = insensitive).
        include_float_input: count a float-input first layer too (the paper
            counts the binary layers only: :func:`flip_layers`).
        log_dir: if given, flip histograms and ``p_l`` go to TensorBoard there.
        checkpoint_dir: if given, the counts are saved there at each epoch end
            and restored at the start of ``fit`` (an interrupted run resumes).
    """

    def __init__(self, last_epochs: int | None = None, epochs: tuple[int, int] | None = None,
                 steps: tuple[int, int] | None = None, every: str | int = "epoch",
                 threshold: float = 0, include_float_input: bool = False,
                 log_dir: str | os.PathLike | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        super().__init__()
        if sum(x is not None for x in (last_epochs, epochs, steps)) != 1:
            raise ModelError("give exactly one interval: last_epochs=, epochs= or steps=")
        if every != "epoch" and (not isinstance(every, int) or every < 1):
            raise ModelError(f"every must be 'epoch' or a positive number of steps, got {every!r}")
        if last_epochs is not None and last_epochs < 1:
            raise ModelError(f"last_epochs must be >= 1, got {last_epochs}")
        self.last_epochs, self.epoch_window, self.step_window = last_epochs, epochs, steps
        self.every, self.threshold = every, threshold
        self.include_float_input = include_float_input
        self.log_dir, self.checkpoint_dir = log_dir, checkpoint_dir
        self.counter: FlipCounter | None = None
        self._epoch = 0

    # ---------------------------------------------------------- interval
    def _in_epoch_window(self, epoch: int) -> bool:
        if self.step_window is not None:
            return True
        first, last = self.epoch_window or (self.params["epochs"] - self.last_epochs,
                                            self.params["epochs"] - 1)
        return first <= epoch <= last

    def _in_step_window(self, step: int) -> bool:
        if self.step_window is None:
            return True
        return self.step_window[0] <= step <= self.step_window[1]

    # ---------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        if self.counter is None:
            with self.model.distribute_strategy.scope():
                self.counter = FlipCounter(flip_layers(self.model, self.include_float_input))
        self._manager = None
        if self.checkpoint_dir is not None:
            self._manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(flips=self.counter), os.fspath(self.checkpoint_dir), 1)
            if self._manager.latest_checkpoint:
                tf.train.Checkpoint(flips=self.counter).restore(self._manager.latest_checkpoint)
        self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir)) if self.log_dir else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        first = int(self.counter.samples.numpy()) == 0      # .numpy(): mirrored too
        if self.every == "epoch" and self._in_epoch_window(epoch) and first:
            self.counter.sample()         # the reference snapshot at the interval start

    def on_train_batch_end(self, batch, logs=None):
        if self.every == "epoch" or not self._in_epoch_window(self._epoch):
            return
        step = int(self.model.optimizer.iterations.numpy())
        first = self.step_window[0] if self.step_window else 0
        if self._in_step_window(step) and (step - first) % self.every == 0:
            self.counter.sample()

    def on_epoch_end(self, epoch, logs=None):
        if self.every == "epoch" and self._in_epoch_window(epoch):
            self.counter.sample()
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                for name, s in self.stats().items():
                    tf.summary.scalar(f"flips/{name}/p", s.p)
                    tf.summary.histogram(f"flips/{name}/counts",
                                         self.counter.counts[self.counter.layer_names.index(name)])
            self._writer.flush()
        if self._manager is not None:
            self._manager.save()

    def stats(self) -> dict[str, LayerFlips]:
        """Per-layer statistics so far, over live weights (see :func:`layer_stats`)."""
        return layer_stats(self.counter, self.threshold, self.model)


class PruneByFlipFrequency(FlipTracker):
    """:class:`FlipTracker` that prunes the (masked) model at the end of ``fit``.

    Widths follow ``C'_l = round((1 - p_l) C_l)`` over the kept filters and live
    weights (a model pruned before keeps what it pruned), rounded to the nearest
    multiple ``round_to`` asks (:func:`round_widths`); the highest-flipping filters
    go. Afterwards ``self.widths`` maps each pruned layer to ``(before, after)``,
    ``self.p_widths`` to its unrounded ``p_l`` width and ``self.pruned_stats`` holds the
    statistics they come from (before pruning changed which weights are live); call
    :func:`bnnprune_tf.shrink.shrink` to remove the channels.
    """

    def __init__(self, *args, round_to=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.round_to = round_to
        self.widths: dict[str, tuple[int, int]] = {}
        self.p_widths: dict[str, int] = {}
        self.pruned_stats: dict[str, LayerFlips] = {}

    def on_train_begin(self, logs=None):
        masks.require_masks(self.model, "PruneByFlipFrequency")
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        graph = ChannelGraph(self.model)
        self.pruned_stats = self.stats()
        self.p_widths = widths_from_flips(self.model, self.pruned_stats, graph,
                                          self.include_float_input)
        before = kept_widths(self.model)
        prune_filters(self.model, flip_criterion(self.counter),
                      widths=round_widths(self.model, self.p_widths, self.round_to, graph),
                      graph=graph)
        after = kept_widths(self.model)
        self.widths = {n: (before[n], after[n]) for n in self.p_widths}


@dataclass
class Iteration:
    """One train-measure-shrink round of :func:`prune_by_flip_frequency`.

    ``val_correct`` / ``control_correct``: correctly classified validation images of the
    round's model and of the dense control trained for the same epochs (integers: a
    budget is never judged on floats at its edge).
    """

    index: int
    val_correct: int
    control_correct: int
    val_samples: int
    binary_macs: int
    widths: dict[str, int]                       # widths the round trained with
    stats: dict[str, LayerFlips] = field(repr=False)
    pruned: tuple[str, ...] = ()                 # layers whose p_l decides their width

    @property
    def val_accuracy(self) -> float:
        return self.val_correct / self.val_samples

    @property
    def max_p(self) -> float:
        """``max_l p_l`` over the layers WFF prunes (not the first layer or the classifier)."""
        return max((s.p for n, s in self.stats.items() if n in self.pruned), default=0.0)

    def to_dict(self) -> dict:
        return {"index": self.index, "val_accuracy": self.val_accuracy,
                "val_correct": self.val_correct, "control_correct": self.control_correct,
                "val_samples": self.val_samples, "binary_macs": self.binary_macs,
                "widths": self.widths, "max_p": self.max_p, "pruned": list(self.pruned),
                "p": {n: s.p for n, s in self.stats.items()},
                "histograms": {n: s.histogram for n, s in self.stats.items()}}


@dataclass
class WFFResult:
    model: tf.keras.Model          # the chosen (shrunk, trained) model
    chosen: int                    # index of the iteration it comes from
    iterations: list[Iteration]
    stop_reason: str

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "stop_reason": self.stop_reason,
                "iterations": [it.to_dict() for it in self.iterations]}


def latent_decay(model: tf.keras.Model, weight_decay: float, include_float_input: bool = False):
    """A loss term ``weight_decay * sum(latent^2)`` over the counted layers' latent kernels:
    the coupled L2 decay of the official code's training, under which weights with ~0 task
    gradient drift to the sign boundary and flip (``None`` for ``weight_decay == 0``).

    Example::

        model.add_loss(latent_decay(model, 1e-3))
    """
    if not weight_decay:
        return None
    kernels = [layer_facts.latent_kernel(l) for l in flip_layers(model, include_float_input)]
    return lambda: weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])


def add_latent_decay(model: tf.keras.Model, weight_decay: float,
                     include_float_input: bool = False) -> tf.keras.Model:
    """``model`` with :func:`latent_decay` added to its loss (unchanged for ``0``).

    Example::

        model = add_latent_decay(copy_model(trained), 1e-3)
    """
    term = latent_decay(model, weight_decay, include_float_input)
    if term is not None:
        model.add_loss(term)
    return model


def prune_by_flip_frequency(
    model: tf.keras.Model, dataset, *, epochs: int, interval: int, threshold: float = 0,
    max_iterations: int = 3, accuracy_budget: float = 0.01, follow_up: str = "finetune",
    finetune_epochs: int | None = None, pretrained: bool = False, learning_rate: float = 1e-2,
    finetune_learning_rate: float | None = None, batch_size: int = 64, round_to=None,
    every: str | int = "epoch", include_float_input: bool = False, weight_decay: float = 0.0,
    seed: int = 0, verbose: int = 0, log=print, work_dir: str | os.PathLike | None = None,
) -> WFFResult:
    """The iterative procedure: train, measure flips, shrink; repeat. ``model`` is not changed.

    Round 0 trains a copy of ``model`` for ``epochs``, counting flips over the
    last ``interval`` epochs; with ``pretrained=True`` it only measures:
    ``interval`` more epochs at a tenth of ``learning_rate`` (the paper counts
    flips while the learning rate is at its lowest). Each later round trains
    the shrunk network: for ``finetune_epochs`` (default ``epochs``) from the
    shrunk weights at ``finetune_learning_rate`` (default a tenth of
    ``learning_rate``; ``follow_up="finetune"``) or for ``epochs`` from a fresh
    initialization at ``learning_rate`` (``"scratch"``), counting flips over its
    last ``interval`` epochs. ``weight_decay`` adds coupled L2 decay on the
    counted latent weights (:func:`latent_decay`) to every round and to the
    control. A dense control (the unpruned round-0 model) trains the same
    epochs beside it. Rounds go on until ``max_l p_l`` stops falling
    or after ``max_iterations`` prunings; the result is the cheapest round (fewest
    binary MACs) that lost at most ``accuracy_budget`` of the validation images
    against the control of the same epochs, counted in whole images. With ``work_dir``
    every finished round is saved there (:class:`RoundStore`) and a rerun resumes after
    the last finished round, with the same result as an uninterrupted run.
    """
    settings = {k: v for k, v in locals().items() if k not in ("model", "dataset", "log")}
    if follow_up not in ("finetune", "scratch"):
        raise ModelError(f"follow_up must be 'finetune' or 'scratch', got {follow_up!r}")
    finetune_epochs = finetune_epochs or epochs
    if not 1 <= interval <= min(epochs, finetune_epochs):
        raise ModelError(f"interval must be between 1 and the epochs of a round "
                         f"({min(epochs, finetune_epochs)}), got {interval}")
    def decayed(m):
        return add_latent_decay(m, weight_decay, include_float_input)

    current, rounds, models_by_round = decayed(copy_model(model)), [], []
    store = RoundStore(work_dir, (model, dataset, settings)) if work_dir is not None else None
    control = None
    n_val = len(dataset.split("val")[1])
    stop_reason = "max_iterations reached"
    for index in range(max_iterations + 1):
        if index == 0:
            n_epochs = interval if pretrained else epochs
            lr = learning_rate / 10 if pretrained else learning_rate
        else:
            n_epochs = epochs if follow_up == "scratch" else finetune_epochs
            lr = learning_rate if follow_up == "scratch" else (finetune_learning_rate
                                                                 or learning_rate / 10)
        saved = store.load(index, decayed) if store else None
        if saved is not None:
            current, control, iteration, counts = saved
        else:
            tracker = FlipTracker(last_epochs=interval, every=every, threshold=threshold,
                                  include_float_input=include_float_input)
            training.train(current, dataset, n_epochs, lr, batch_size=batch_size,
                           seed=seed + index, callbacks=[tracker], verbose=verbose)
            if index == 1 or (index > 1 and follow_up == "finetune"):
                training.train(control, dataset, n_epochs, lr, batch_size=batch_size,
                               seed=seed + index, verbose=verbose)
            correct = training.count_correct(current, dataset, "val")
            control_correct = correct if control is None else \
                training.count_correct(control, dataset, "val")
            stats = tracker.stats()
            prunable = widths_from_flips(current, stats, include_float_input=include_float_input)
            iteration = Iteration(index, correct, control_correct, n_val,
                                  profile.profile(current).binary_macs, kept_widths(current),
                                  stats, tuple(prunable))
            counts = tracker.counter.counts_numpy()
            if store:
                store.save(iteration, current, control, counts)
        prunable = widths_from_flips(current, iteration.stats,
                                     include_float_input=include_float_input)
        rounds.append(iteration)
        models_by_round.append(current)
        log(f"[wff] round {index}: {iteration.val_correct}/{n_val} validation images (control "
            f"{iteration.control_correct}), binary MACs {rounds[-1].binary_macs:,}, "
            f"max p_l {rounds[-1].max_p:.3f}")
        if index > 0 and rounds[-1].max_p >= rounds[-2].max_p:
            stop_reason = "max p_l stopped falling"
            break
        if index == max_iterations:
            break
        if control is None and follow_up == "finetune":
            control = decayed(copy_model(current))
        elif control is None:                 # scratch: the control trains from scratch too
            tf.keras.utils.set_random_seed(seed + 1)
            control = decayed(tf.keras.models.clone_model(current))
        masked = prune_filters(current, flip_criterion(counts),
                               widths=round_widths(current, prunable, round_to))
        current = shrink(masked)
        if follow_up == "scratch":
            tf.keras.utils.set_random_seed(seed + index + 1)
            current = tf.keras.models.clone_model(current)     # same widths, fresh weights
        current = decayed(current)
    chosen = choose_round(rounds, accuracy_budget)
    return WFFResult(models_by_round[chosen.index], chosen.index, rounds, stop_reason)


class RoundStore:
    """Finished rounds of :func:`prune_by_flip_frequency` on disk, one directory each
    (``round<i>/``: the trained model, the control, the flip counts and the round's
    numbers), written atomically and ``done`` last, so a killed run resumes after its
    last finished round.

    ``inputs`` (the model, the dataset and the settings) are hashed into ``key``: rounds
    saved from other inputs are removed, never resumed from. Under ``multi_worker`` only
    the chief writes, and every worker resumes the rounds the chief finished.

    Example::

        store = RoundStore("runs/demo/prune", (model, ds, {"epochs": 4}))
        saved = store.load(0, lambda m: m)     # None until round 0 finished
    """

    def __init__(self, directory: str | os.PathLike, inputs: tuple):
        self.dir = Path(directory)
        model, dataset, settings = inputs
        digest = hashlib.sha256(repr(sorted(settings.items())).encode())
        for array in [*model.get_weights(), *(dataset.split(s)[0] for s in ("train", "val"))]:
            digest.update(np.ascontiguousarray(array).tobytes())
        key = digest.hexdigest()[:16]
        stamp = self.dir / "rounds.key"
        self.chief = distribute.is_chief()
        fresh = stamp.exists() and stamp.read_text() == key
        if self.chief and not fresh:
            for old in self.dir.glob("round[0-9]*"):
                shutil.rmtree(old)
            files.write_text(stamp, key)
        done = 0
        while fresh and (self.dir / f"round{done}" / "done").exists():
            done += 1
        self.finished = distribute.resumable(done)

    def save(self, iteration: Iteration, current, control, counts: Mapping[str, np.ndarray]):
        if not self.chief:
            # saving reads the mirrored variables, a collective every worker takes part
            # in; the other workers' copies go to a scratch directory, then away
            with tempfile.TemporaryDirectory(prefix="bnnprune-round-") as scratch:
                for name, model in (("model", current), ("control", control)):
                    if model is not None:
                        files.save_model(model, Path(scratch) / f"{name}.keras")
            return
        path = self.dir / f"round{iteration.index}"
        (path / "done").unlink(missing_ok=True)
        files.save_model(current, path / "model.keras")
        if control is not None:
            files.save_model(control, path / "control.keras")
        buffer = io.BytesIO()
        np.savez(buffer, **{f"counts/{n}": c for n, c in counts.items()},
                 **{f"mean/{n}": s.filter_mean for n, s in iteration.stats.items()})
        files.write_bytes(path / "flips.npz", buffer.getvalue())
        files.write_json(path / "round.json", {**iteration.to_dict(), "pruned": iteration.pruned,
                                               "control": control is not None})
        files.write_text(path / "done", "")

    def load(self, index: int, decayed):
        """``(model, control, Iteration, counts)`` of finished round ``index``, or None.
        ``decayed`` re-attaches the loss term a saved model does not keep."""
        path = self.dir / f"round{index}"
        if index >= self.finished:
            return None
        info = json.loads((path / "round.json").read_text())
        arrays = np.load(path / "flips.npz")
        counts = {k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.startswith("counts/")}
        stats = {n: LayerFlips(n, info["p"][n], info["histograms"][n], arrays[f"mean/{n}"])
                 for n in info["p"]}
        iteration = Iteration(index, info["val_correct"], info["control_correct"],
                              info["val_samples"], info["binary_macs"], info["widths"], stats,
                              tuple(info["pruned"]))
        load = tf.keras.models.load_model
        control = decayed(load(path / "control.keras")) if info["control"] else None
        return load(path / "model.keras"), control, iteration, counts


def choose_round(rounds: list[Iteration], accuracy_budget: float) -> Iteration:
    """The cheapest round (fewest binary MACs; ties: more correct) that lost at most
    ``floor(accuracy_budget * images)`` validation images against its dense control;
    round 0 (unpruned) if none did.

    Example::

        choose_round(result.iterations, 0.02).index
    """
    within = [it for it in rounds if it.control_correct - it.val_correct
              <= math.floor(accuracy_budget * it.val_samples + 1e-9)]
    return min(within, key=lambda it: (it.binary_macs, -it.val_correct)) if within else rounds[0]


class FlipParams(Params):
    """Parameters of :class:`FlipFrequency`; ``epochs`` / ``learning_rate`` are those of
    each fine-tuning round, ``interval`` the last epochs of a round that flips are
    counted over."""

    threshold: float = Field(0, ge=0)
    interval: int = Field(2, ge=1)
    every: Literal["epoch"] | int = "epoch"
    iterations: int = Field(2, ge=1)
    accuracy_budget: float = Field(0.01, ge=0)
    follow_up: Literal["finetune", "scratch"] = "finetune"
    round_to: RoundTo = None
    include_float_input: bool = False
    weight_decay: float = Field(0.0, ge=0)           # coupled L2 on counted latent weights

    @model_validator(mode="after")
    def _interval_fits(self):
        if isinstance(self.every, int) and self.every < 1:
            raise ValueError(f"every must be 'epoch' or a positive number of steps, got "
                             f"{self.every}")
        if self.follow_up == "finetune" and self.interval > self.epochs:
            raise ValueError(f"interval ({self.interval} epochs) is longer than a fine-tuning "
                             f"round (epochs: {self.epochs}); raise epochs or shorten interval")
        return self


def histogram_figure(stats: Mapping[str, LayerFlips], title: str) -> Figure:
    """Flips per weight, one bar panel per layer."""
    return Figure(title, "bar", {n: {"x": list(range(len(s.histogram))),
                                     "series": {"weights": s.histogram}}
                                 for n, s in stats.items()},
                  xlabel="flips", ylabel="weights", log_y=True)


@register("wff")
class FlipFrequency(Method):
    """Weight flipping frequency (Li & Ren, ISQED 2020) behind the method interface.

    In a user's own ``fit``, :meth:`callbacks` counts flips over the last
    ``interval`` epochs and prunes at the end of the fit; :meth:`run` is the
    iterative procedure (:func:`prune_by_flip_frequency`) on a trained model.
    """

    Params = FlipParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._pruner: PruneByFlipFrequency | None = None

    def loss(self, model):
        return latent_decay(model, self.params.weight_decay, self.params.include_float_input)

    def callbacks(self):
        p = self.params
        self._pruner = PruneByFlipFrequency(last_epochs=p.interval, every=p.every,
                                            threshold=p.threshold, round_to=p.round_to,
                                            include_float_input=p.include_float_input)
        return [self._pruner]

    def finalize(self, model):
        result = Result(strip_pruning(model), model)
        if self._pruner is not None and self._pruner.pruned_stats:
            stats = self._pruner.pruned_stats
            result.metrics.update(widths=self._pruner.widths,
                                  p={n: s.p for n, s in stats.items()})
            result.metrics["p_widths"] = self._pruner.p_widths
            result.tables["Share of live weights that flipped more than T times"] = {
                n: {"p_l": s.p, "width before": self._pruner.widths.get(n, ("", ""))[0],
                    "p_l width": self._pruner.p_widths.get(n, ""),
                    "width after": self._pruner.widths.get(n, ("", ""))[1]}
                for n, s in stats.items()}
            result.figures["wff_flips"] = histogram_figure(
                stats, f"flips per weight over the last {self.params.interval} epochs")
        return result

    def run(self, model, context: Context):
        """The iterative procedure on a trained ``model``: measure flips for ``interval``
        epochs at a tenth of ``context.learning_rate``, shrink, fine-tune, repeat."""
        p = self.params
        wff = prune_by_flip_frequency(
            model, context.dataset, epochs=context.epochs, interval=p.interval,
            threshold=p.threshold, max_iterations=p.iterations,
            accuracy_budget=p.accuracy_budget, follow_up=p.follow_up,
            finetune_epochs=p.epochs, pretrained=True, finetune_learning_rate=p.learning_rate,
            learning_rate=context.learning_rate, batch_size=context.batch_size,
            round_to=p.round_to, every=p.every, include_float_input=p.include_float_input,
            weight_decay=p.weight_decay, seed=context.seed, log=context.log,
            work_dir=context.work_dir)
        first = wff.iterations[0]
        after = p.interval if wff.chosen == 0 else (
            p.interval + wff.chosen * p.epochs if p.follow_up == "finetune" else context.epochs)
        result = Result(wff.model, wff.model, metrics={**wff.to_dict(), "epochs_trained": after})
        result.tables[f"Rounds (chosen: the cheapest within budget of the dense control "
                      f"trained as long, round {wff.chosen}; stopped: {wff.stop_reason})"] = {
            f"round {it.index}": {"val correct": it.val_correct,
                                  "control correct": it.control_correct,
                                  "binary MACs": it.binary_macs, "max p_l": it.max_p}
            for it in wff.iterations}
        result.tables["Share of weights that flipped more than T times"] = {
            n: {f"p_l round {it.index}": it.stats[n].p for it in wff.iterations
                if n in it.stats} for n in first.stats}
        result.figures["wff_flips"] = histogram_figure(
            first.stats, f"flips per weight over the last {p.interval} epochs (round 0)")
        return result
