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

import os
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np
import tensorflow as tf

from pydantic import Field, model_validator

from bnnprune_tf import layer_facts, masks, profile, select, training
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
    of snapshots taken (so a count is at most ``samples - 1``).

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
        self._kernels = [layer_facts.latent_kernel(l) for l in layers]
        self.counts = [tf.Variable(tf.zeros(k.shape, tf.int32), trainable=False,
                                   name=f"{n}_flips") for k, n in zip(self._kernels, self.layer_names)]
        self.last_sign = [tf.Variable(tf.zeros(k.shape, tf.int8), trainable=False,
                                      name=f"{n}_sign") for k, n in zip(self._kernels, self.layer_names)]
        self.samples = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples")

    @tf.function
    def sample(self):
        """Take a snapshot: count weights whose sign differs from the last snapshot."""
        counting = self.samples > 0
        for kernel, count, last in zip(self._kernels, self.counts, self.last_sign):
            sign = tf.cast(tf.convert_to_tensor(kernel) >= 0, tf.int8)   # sign(0) = +1
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


def layer_stats(counter: FlipCounter, threshold: float = 0) -> dict[str, LayerFlips]:
    """``p_l``, the flip histogram and per-filter mean flips of every counted layer."""
    out = {}
    for name, counts in counter.counts_numpy().items():
        per_filter = counts.reshape(-1, counts.shape[-1])
        out[name] = LayerFlips(name=name, p=float(np.mean(counts > threshold)),
                               histogram=np.bincount(counts.ravel()).tolist(),
                               filter_mean=per_filter.mean(axis=0))
    return out


def flip_criterion(counter: FlipCounter) -> select.Criterion:
    """Filter scores for :func:`bnnprune_tf.prune.prune_filters`: fewer flips = more important.

    Score = ``-(total flips of the filter) + mean|latent| / 2``; as flip totals
    are integers and ``|latent| <= 1``, the latent term only breaks ties (the
    smaller mean |latent| goes first).
    """
    counts = counter.counts_numpy()

    def score(layer) -> np.ndarray:
        if layer.name not in counts:
            raise ModelError(f"no flip counts for layer {layer.name!r}: it has no binary kernel")
        c = counts[layer.name]
        latent = np.abs(np.asarray(layer_facts.latent_kernel(layer)))
        return -c.reshape(-1, c.shape[-1]).sum(0) + latent.reshape(-1, c.shape[-1]).mean(0) / 2

    return score


def widths_from_flips(model: tf.keras.Model, stats: Mapping[str, LayerFlips],
                      graph: ChannelGraph | None = None) -> dict[str, int]:
    """``C'_l = round((1 - p_l) * C_l)`` (at least 1) for every prunable binary layer."""
    graph = graph or ChannelGraph(model)
    widths = {}
    for name, s in stats.items():
        groups = graph.groups_of(name)
        if len(groups) == 1 and groups[0].prunable:
            c = int(model.get_layer(name).output.shape[-1])
            widths[name] = max(1, int(round((1.0 - s.p) * c)))
    return widths


class FlipTracker(tf.keras.callbacks.Callback):
    """Count per-weight sign flips of every binary layer during ``fit``.

    Args:
        last_epochs: the interval is the last K epochs of this ``fit``; or give
        epochs: ``(first, last)`` epochs (0-based, inclusive); or give
        steps: ``(first, last)`` optimizer steps (inclusive).
        every: ``"epoch"`` (snapshot at every epoch end, as the paper's code)
            or an int N (a snapshot every N steps).
        threshold: ``T`` of ``p_l`` (more than T flips = insensitive).
        log_dir: if given, flip histograms and ``p_l`` go to TensorBoard there.
        checkpoint_dir: if given, the counts are saved there at each epoch end
            and restored at the start of ``fit`` (an interrupted run resumes).
    """

    def __init__(self, last_epochs: int | None = None, epochs: tuple[int, int] | None = None,
                 steps: tuple[int, int] | None = None, every: str | int = "epoch",
                 threshold: float = 0, log_dir: str | os.PathLike | None = None,
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
                self.counter = FlipCounter(layer_facts.binary_kernel_layers(self.model))
        self._manager = None
        if self.checkpoint_dir is not None:
            self._manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(flips=self.counter), os.fspath(self.checkpoint_dir), 1)
            if self._manager.latest_checkpoint:
                tf.train.Checkpoint(flips=self.counter).restore(self._manager.latest_checkpoint)
        self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir)) if self.log_dir else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.every == "epoch" and self._in_epoch_window(epoch) and int(self.counter.samples) == 0:
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
        """Per-layer statistics so far (see :func:`layer_stats`)."""
        return layer_stats(self.counter, self.threshold)


class PruneByFlipFrequency(FlipTracker):
    """:class:`FlipTracker` that prunes the (masked) model at the end of ``fit``.

    Widths follow ``C'_l = round((1 - p_l) C_l)``, rounded down with
    ``round_to`` (see :mod:`bnnprune_tf.select`); the highest-flipping filters
    go. Afterwards ``self.widths`` maps each pruned layer to ``(before, after)``;
    call :func:`bnnprune_tf.shrink.shrink` to remove the channels.
    """

    def __init__(self, *args, round_to=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.round_to = round_to
        self.widths: dict[str, tuple[int, int]] = {}

    def on_train_begin(self, logs=None):
        masks.require_masks(self.model, "PruneByFlipFrequency")
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        graph = ChannelGraph(self.model)
        targets = widths_from_flips(self.model, self.stats(), graph)
        before = {n: int(self.model.get_layer(n).channel_mask.numpy().sum()) for n in targets}
        prune_filters(self.model, flip_criterion(self.counter), widths=targets,
                      round_to=self.round_to, graph=graph)
        self.widths = {n: (before[n], int(self.model.get_layer(n).channel_mask.numpy().sum()))
                       for n in targets}


@dataclass
class Iteration:
    """One train-measure-shrink round of :func:`prune_by_flip_frequency`."""

    index: int
    val_accuracy: float
    binary_macs: int
    widths: dict[str, int]                       # widths the round trained with
    stats: dict[str, LayerFlips] = field(repr=False)

    @property
    def max_p(self) -> float:
        return max((s.p for s in self.stats.values()), default=0.0)

    def to_dict(self) -> dict:
        return {"index": self.index, "val_accuracy": self.val_accuracy,
                "binary_macs": self.binary_macs, "widths": self.widths, "max_p": self.max_p,
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


def prune_by_flip_frequency(
    model: tf.keras.Model, dataset, *, epochs: int, interval: int, threshold: float = 0,
    max_iterations: int = 3, accuracy_budget: float = 0.01, follow_up: str = "finetune",
    finetune_epochs: int | None = None, pretrained: bool = False, learning_rate: float = 1e-2,
    finetune_learning_rate: float | None = None, batch_size: int = 64, round_to=None,
    every: str | int = "epoch", seed: int = 0, verbose: int = 0, log=print,
) -> WFFResult:
    """The iterative procedure: train, measure flips, shrink; repeat.

    Round 0 trains ``model`` for ``epochs``, counting flips over the last
    ``interval`` epochs; with ``pretrained=True`` it only measures: ``interval``
    more epochs at a tenth of ``learning_rate`` (the paper counts flips while
    the learning rate is at its lowest). Each later round trains the shrunk
    network: for ``finetune_epochs`` (default ``epochs``) from the shrunk
    weights at ``finetune_learning_rate`` (default a tenth of ``learning_rate``;
    ``follow_up="finetune"``) or for
    ``epochs`` from a fresh initialization at ``learning_rate`` (``"scratch"``),
    counting flips over its last ``interval`` epochs. It stops when ``max_l p_l`` no longer falls, when the validation
    accuracy falls more than ``accuracy_budget`` below round 0's (then the
    previous round's model is returned), or after ``max_iterations`` prunings.
    """
    if follow_up not in ("finetune", "scratch"):
        raise ModelError(f"follow_up must be 'finetune' or 'scratch', got {follow_up!r}")
    finetune_epochs = finetune_epochs or epochs
    if not 1 <= interval <= min(epochs, finetune_epochs):
        raise ModelError(f"interval must be between 1 and the epochs of a round "
                         f"({min(epochs, finetune_epochs)}), got {interval}")
    current, previous, rounds = model, None, []
    for index in range(max_iterations + 1):
        lr = learning_rate
        if index == 0:
            n_epochs = interval if pretrained else epochs
            lr = learning_rate / 10 if pretrained else learning_rate
        else:
            n_epochs = epochs if follow_up == "scratch" else finetune_epochs
            lr = learning_rate if follow_up == "scratch" else (finetune_learning_rate
                                                                 or learning_rate / 10)
        training.compile_model(current, lr,
                               decay_steps=n_epochs * training.steps_per_epoch(dataset, batch_size))
        tracker = FlipTracker(last_epochs=interval, every=every, threshold=threshold)
        training.fit(current, dataset, n_epochs, batch_size, seed=seed + index,
                     callbacks=[tracker], verbose=verbose)
        accuracy = training.evaluate(current, dataset, "val")["accuracy"]
        rounds.append(Iteration(index, accuracy, profile.profile(current).binary_macs,
                                kept_widths(current), tracker.stats()))
        log(f"[wff] round {index}: val accuracy {accuracy:.4f}, binary MACs "
            f"{rounds[-1].binary_macs:,}, max p_l {rounds[-1].max_p:.3f}")
        if index > 0 and rounds[0].val_accuracy - accuracy > accuracy_budget:
            return WFFResult(previous, index - 1, rounds,
                             f"accuracy fell {rounds[0].val_accuracy - accuracy:.4f} > budget")
        if index > 0 and rounds[-1].max_p >= rounds[-2].max_p:
            return WFFResult(current, index, rounds, "max p_l stopped falling")
        if index == max_iterations:
            return WFFResult(current, index, rounds, "max_iterations reached")
        masked = prune_filters(current, flip_criterion(tracker.counter),
                               widths=widths_from_flips(current, rounds[-1].stats),
                               round_to=round_to)
        previous, current = current, shrink(masked)
        if follow_up == "scratch":
            tf.keras.utils.set_random_seed(seed + index + 1)
            current = tf.keras.models.clone_model(current)     # same widths, fresh weights
    raise AssertionError("unreachable")


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

    def callbacks(self):
        p = self.params
        self._pruner = PruneByFlipFrequency(last_epochs=p.interval, every=p.every,
                                            threshold=p.threshold, round_to=p.round_to)
        return [self._pruner]

    def finalize(self, model):
        result = Result(strip_pruning(model), model)
        if self._pruner is not None and self._pruner.counter is not None:
            stats = self._pruner.stats()
            result.metrics.update(widths=self._pruner.widths,
                                  p={n: s.p for n, s in stats.items()})
            result.tables["Share of weights that flipped more than T times"] = {
                n: {"p_l": s.p, "width before": self._pruner.widths.get(n, ("", ""))[0],
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
            round_to=p.round_to, every=p.every, seed=context.seed, log=context.log)
        first = wff.iterations[0]
        result = Result(wff.model, wff.model, metrics=wff.to_dict())
        result.tables[f"Rounds (chosen: round {wff.chosen}; stopped: {wff.stop_reason})"] = {
            f"round {it.index}": {"val accuracy": it.val_accuracy,
                                  "binary MACs": it.binary_macs, "max p_l": it.max_p}
            for it in wff.iterations}
        result.tables["Share of weights that flipped more than T times"] = {
            n: {f"p_l round {it.index}": it.stats[n].p for it in wff.iterations
                if n in it.stats} for n in first.stats}
        result.figures["wff_flips"] = histogram_figure(
            first.stats, f"flips per weight over the last {p.interval} epochs (round 0)")
        return result
