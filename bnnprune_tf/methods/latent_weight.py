"""Latent-weight pruning with layer-level sensitivity analysis (ASPDAC 2023).

What the method does (only the abstract is public; the rest is our
reconstruction, ``../shared/reference/methods.md`` section 2): a weight's
importance is the magnitude of its *latent* weight, ``|w|``. A small ``|w|``
sits at the sign boundary: the weight has little inertia and flips easily,
so it carries little of what the network learned. Per layer, a
sensitivity analysis (:mod:`bnnprune_tf.sensitivity`) picks the share
``r_l`` to prune: the largest ratio whose accuracy drop, with that layer
alone pruned and no retraining, is at most ``epsilon`` (``0`` = "no accuracy
loss"), or a global operations budget spread by sensitivity. Then all
layers are pruned at once and fine-tuned with the masks fixed.

Two granularities:

- ``"weight"`` (unstructured, the paper's): the ``r_l * N_l`` weights with
  the smallest ``|w|`` are masked; effective weights become ternary
  ``{-1, 0, +1}`` and operations count only unmasked weights. Filters left
  with no weight are turned into pruned channels (they would only emit a
  constant) before fine-tuning, so :func:`bnnprune_tf.shrink.shrink` removes
  them. LCE cannot run zero binary weights: converting a model with weight
  masks inside kept filters raises a ``ModelError`` that points to the
  structured mode or to the microcontroller runtime (``converters.c_export``).
- ``"channel"`` (structured): a filter scores the **mean** ``|w|`` of its
  unmasked weights (:func:`filter_latent_mean`). Why the mean: every binary
  weight contributes ``+-1`` whatever its latent value, so ``|w|`` measures
  how settled a sign is, not how large its contribution is; the mean says
  how settled the filter is as a whole. The max would let one saturated
  weight (clipped at 1) vouch for a filter of undecided ones; a count above
  a threshold needs a threshold; the sum ranks a layer's filters like the
  mean, but within a residual group (producers of different fan-in summed)
  the mean weighs each producer equally. The model is then shrunk and
  converted with LCE like any structured pruning result.

Pruning is one-shot (before fine-tuning) or gradual (a tfmot schedule
inside ``model.fit``, ratios ``r_l * sparsity(step)``).

Example::

    from bnnprune_tf import data, masks, models, training
    from bnnprune_tf.methods import latent_weight as lw

    ds = data.load("mnist5k")
    model = models.build("mnist_bnn", ds.input_shape)
    training.compile_model(model, 1e-2, decay_steps=10 * training.steps_per_epoch(ds, 64))
    training.fit(model, ds, epochs=10)
    result = lw.prune_by_latent_weights(model, ds, granularity="weight", epsilon=0.0,
                                        finetune_epochs=2)
    print(result.ratios, result.after["operations"] / result.before["operations"])

    # or inside your own fit: choose ratios, then prune gradually
    import tensorflow_model_optimization as tfmot
    masked = masks.prunable(model)
    ratios = lw.choose_ratios(masked, *ds.arrays("val"), epsilon=0.005)[0]
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=400,
                                                    frequency=50)   # shape; ratios = end
    training.compile_model(masked, 1e-3)
    training.fit(masked, ds, 3, callbacks=[lw.PruneLatentWeights(ratios, schedule=schedule)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf import masks, select, sensitivity, training
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.shrink import shrink

GRANULARITIES = ("weight", "channel")


def latent_magnitude(layer) -> np.ndarray:
    """Weight score: ``|latent weight|`` per kernel entry (higher = keep)."""
    return np.abs(np.asarray(layer.latent_kernel))


def filter_latent_mean(layer) -> np.ndarray:
    """Filter score: mean ``|latent weight|`` over the filter's unmasked weights (0 if none)."""
    magnitude = latent_magnitude(layer)
    alive = np.asarray(layer.full_mask()) > 0
    n = magnitude.shape[-1]
    total = np.where(alive, magnitude, 0.0).reshape(-1, n).sum(axis=0)
    count = alive.reshape(-1, n).sum(axis=0)
    return np.divide(total, count, out=np.zeros(n), where=count > 0)


def level(granularity: str = "weight", round_to=None) -> sensitivity.Level:
    """The sensitivity level scoring by latent magnitude at ``granularity``."""
    if granularity == "weight":
        if round_to is not None:
            raise ModelError("round_to applies to channel counts: use it with "
                             "granularity='channel', or leave it out")
        return sensitivity.WeightLevel(latent_magnitude)
    if granularity == "channel":
        return sensitivity.ChannelLevel(filter_latent_mean, round_to)
    raise ModelError(f"unknown granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")


def choose_ratios(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *,
                  granularity: str = "weight", epsilon: float | None = None,
                  budget: float | None = None, grid: Sequence[float] = sensitivity.DEFAULT_GRID,
                  layers: Sequence[str] | None = None, round_to=None, progress: bool = True
                  ) -> tuple[dict[str, float], sensitivity.Sensitivity]:
    """Per-layer ratios from a sensitivity analysis on ``(x, y)`` (validation data).

    Give ``epsilon`` (largest accuracy drop per layer, a fraction: 0.005 = half
    a point) or ``budget`` (share of the operations to keep); neither means
    ``epsilon=0``, the paper's "no accuracy loss".
    """
    if epsilon is not None and budget is not None:
        raise ModelError("give epsilon= (accuracy drop per layer) or budget= (share of "
                         "operations to keep), not both")
    result = sensitivity.analyze(model, level(granularity, round_to), x, y, grid, layers,
                                 progress=progress)
    if budget is not None:
        return result.ratios_for_budget(budget), result
    return result.ratios_within(epsilon or 0.0), result


def prune_latent(model: tf.keras.Model, ratios: Mapping[str, float], granularity: str = "weight",
                 round_to=None, graph: ChannelGraph | None = None) -> tf.keras.Model:
    """Mask the smallest-latent weights (or filters) of each layer at its ratio; no training.

    ``model`` is made prunable first (a copy) if it is not; a masked model is
    updated in place, and what was pruned stays pruned. At weight level,
    filters left without weights become pruned channels
    (:func:`bnnprune_tf.select.keep_nonempty`).

    Example::

        masked = prune_latent(model, {"conv2": 0.5, "conv3": 0.4})
    """
    masked = masks.prunable(model)
    graph = graph or ChannelGraph(masked)
    level(granularity, round_to).apply(masked, ratios, graph)
    if granularity == "weight":
        graph.apply_masks(masked, select.keep_nonempty(graph, masked))
    return masked


class PruneLatentWeights(tf.keras.callbacks.Callback):
    """Prune by latent magnitude inside ``model.fit``: one-shot or on a tfmot schedule.

    Without ``schedule`` the model is pruned at ``ratios`` when training
    begins, and the rest of ``fit`` fine-tunes with the masks fixed. With a
    tfmot ``PolynomialDecay`` or ``ConstantSparsity`` schedule, before each
    step where the schedule says to prune, layer ``l`` is pruned to
    ``ratios[l] * sparsity / final_sparsity``: the schedule gives the shape
    over time, ``ratios`` the end point. Weights pruned earlier stay pruned.
    The model given to ``fit`` must be masked (:func:`bnnprune_tf.masks.prunable`).
    ``self.events`` lists ``(step, sparsity)`` of each pruning.
    """

    def __init__(self, ratios: Mapping[str, float], granularity: str = "weight",
                 schedule=None, round_to=None):
        super().__init__()
        level(granularity, round_to)          # validates granularity and round_to
        self.ratios = dict(ratios)
        self.granularity = granularity
        self.schedule = schedule
        self.round_to = round_to
        self.events: list[tuple[int, float]] = []
        self._graph = None
        self._final = _final_sparsity(schedule) if schedule is not None else 1.0

    def _prune(self, fraction: float) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        prune_latent(self.model, {n: r * fraction for n, r in self.ratios.items()},
                     self.granularity, self.round_to, self._graph)
        self.events.append((step, fraction))

    def on_train_begin(self, logs=None):
        masks.require_masks(self.model, "PruneLatentWeights")
        self._graph = ChannelGraph(self.model)
        if self.schedule is None:
            self._prune(1.0)

    def on_train_batch_begin(self, batch, logs=None):
        if self.schedule is None:
            return
        should_prune, sparsity = self.schedule(int(self.model.optimizer.iterations.numpy()))
        if bool(should_prune):
            self._prune(min(1.0, float(sparsity) / self._final))


def _final_sparsity(schedule) -> float:
    config = schedule.get_config().get("config", {})
    final = config.get("final_sparsity", config.get("target_sparsity"))
    if not final:
        raise ModelError(f"cannot read the final sparsity of {type(schedule).__name__}: use "
                         "tfmot.sparsity.keras.PolynomialDecay or ConstantSparsity with a "
                         "final sparsity > 0")
    return float(final)


def gradual_schedule(total_steps: int):
    """A cubic ramp to the full ratios over the first half of ``total_steps``, 8 prunings."""
    import tensorflow_model_optimization as tfmot

    frequency = max(1, total_steps // 16)
    return tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8 * frequency,
                                                frequency=frequency)


@dataclass
class LatentResult:
    """What :func:`prune_by_latent_weights` did.

    ``model`` is the deliverable: shrunk at channel level, masked (ternary
    weights) at weight level; ``masked`` is the fine-tuned masked model.
    ``before``/``after``: validation accuracy and operations.
    """

    model: tf.keras.Model
    masked: tf.keras.Model
    granularity: str
    ratios: dict[str, float]
    analysis: sensitivity.Sensitivity
    before: dict
    after: dict
    history: list[dict] = field(default_factory=list)

    @property
    def operations_reduction(self) -> float:
        return 1.0 - self.after["operations"] / self.before["operations"]

    def to_dict(self) -> dict:
        return {"granularity": self.granularity, "ratios": self.ratios,
                "before": self.before, "after": self.after,
                "operations_reduction": self.operations_reduction,
                "sensitivity": self.analysis.to_dict(), "history": self.history}


def prune_by_latent_weights(
    model: tf.keras.Model, dataset, *, granularity: str = "weight",
    epsilon: float | None = None, budget: float | None = None,
    grid: Sequence[float] = sensitivity.DEFAULT_GRID, layers: Sequence[str] | None = None,
    eval_samples: int | None = None, finetune_epochs: int = 2, learning_rate: float = 1e-3,
    batch_size: int = 64, gradual: bool = False, round_to=None, seed: int = 0,
    work_dir=None, progress: bool = False, verbose: int = 0,
) -> LatentResult:
    """The whole method: analyse sensitivity, prune all layers at once, fine-tune.

    The analysis uses the first ``eval_samples`` validation samples (all by
    default); ``epsilon``/``budget`` as in :func:`choose_ratios`. Fine-tuning
    runs ``finetune_epochs`` with a cosine-decayed ``learning_rate``, after
    one-shot pruning or with ``gradual`` pruning (:func:`gradual_schedule`).
    ``model`` itself is not changed.
    """
    masked = masks.prunable(model)
    if masked is model:                       # already masked: work on a copy
        masked = tf.keras.models.clone_model(model)
        masked.set_weights(model.get_weights())
    x_val, y_val = dataset.arrays("val")
    ratios, analysis = choose_ratios(masked, x_val[:eval_samples], y_val[:eval_samples],
                                     granularity=granularity, epsilon=epsilon, budget=budget,
                                     grid=grid, layers=layers, round_to=round_to,
                                     progress=progress)
    accuracy = sensitivity.accuracy_function(masked, x_val, y_val)
    before = {"val_accuracy": accuracy(), "operations": sensitivity.operations(masked)}
    steps = finetune_epochs * training.steps_per_epoch(dataset, batch_size)
    pruner = PruneLatentWeights(ratios, granularity,
                                gradual_schedule(steps) if gradual and steps else None, round_to)
    history = []
    if finetune_epochs:
        training.compile_model(masked, learning_rate, decay_steps=steps)
        history = training.fit(masked, dataset, finetune_epochs, batch_size, seed=seed,
                               work_dir=work_dir, callbacks=[pruner], verbose=verbose)
    else:
        prune_latent(masked, ratios, granularity, round_to)
    after = {"val_accuracy": accuracy(), "operations": sensitivity.operations(masked)}
    deliverable = shrink(masked) if granularity == "channel" else masked
    return LatentResult(deliverable, masked, granularity, ratios, analysis, before, after, history)
