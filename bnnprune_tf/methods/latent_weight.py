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
inside ``model.fit``, ratios ``r_l * sparsity(step)``). The method is
registered as ``latent`` (:class:`LatentWeight`, run by the generic
:class:`~bnnprune_tf.methods.score_pruning.ScorePruning`).

Example::

    from bnnprune_tf import data, methods, models, training
    from bnnprune_tf.methods import latent_weight as lw

    ds = data.load("mnist5k")
    model = models.build("mnist_bnn", ds.input_shape)
    training.train(model, ds, epochs=10, learning_rate=1e-2)
    result = lw.prune_by_latent_weights(model, ds, granularity="weight", epsilon=0.0,
                                        finetune_epochs=2)
    print(result.metrics["ratios"], result.metrics["operations_reduction"])

    # or inside your own fit
    method = methods.get("latent")(level="weight", epsilon=0.005)
    masked = method.prepare(model, validation_data=ds.arrays("val"))   # sensitivity scan
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(x_train, y_train, epochs=2, callbacks=method.callbacks())
    result = method.finalize(masked)
"""

from __future__ import annotations

from typing import ClassVar, Literal, Mapping, Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, masks, select, sensitivity
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.methods.registry import register
from bnnprune_tf.methods.base import Context, Result
from bnnprune_tf.methods.score_pruning import PruneOnSchedule, ScoreParams, ScorePruning

GRANULARITIES = ("weight", "channel")


def latent_magnitude(layer) -> np.ndarray:
    """Weight score: ``|latent weight|`` per kernel entry (higher = keep)."""
    return np.abs(np.asarray(layer_facts.latent_kernel(layer)))


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


class PruneLatentWeights(PruneOnSchedule):
    """Prune by latent magnitude inside ``model.fit``: one-shot or on a tfmot schedule.

    Without ``schedule`` the model is pruned at ``ratios`` when training
    begins, and the rest of ``fit`` fine-tunes with the masks fixed. With a
    tfmot ``PolynomialDecay`` or ``ConstantSparsity`` schedule, before each
    step where the schedule says to prune, layer ``l`` is pruned to
    ``ratios[l] * sparsity / final_sparsity``: the schedule gives the shape
    over time, ``ratios`` the end point. Weights pruned earlier stay pruned.
    The model given to ``fit`` must be masked (:func:`bnnprune_tf.masks.prunable`).
    ``self.events`` lists ``(step, fraction)`` of each pruning.
    """

    def __init__(self, ratios: Mapping[str, float], granularity: str = "weight",
                 schedule=None, round_to=None):
        level(granularity, round_to)          # validates granularity and round_to
        ratios = dict(ratios)

        def prune(model, fraction):
            prune_latent(model, {n: r * fraction for n, r in ratios.items()}, granularity,
                         round_to)

        super().__init__(prune, schedule)
        self.ratios = ratios


class LatentParams(ScoreParams):
    """:class:`ScoreParams` defaulting to the paper's form: weight level, epsilon 0."""

    level: Literal["channel", "weight"] = "weight"
    default_epsilon: ClassVar[float | None] = 0.0


@register("latent")
class LatentWeight(ScorePruning):
    """Latent-weight magnitude (ASPDAC 2023): |w| per weight, mean |w| per filter."""

    Params = LatentParams

    def filter_scores(self, layer):
        return filter_latent_mean(layer)

    def weight_scores(self, layer):
        return latent_magnitude(layer)


def prune_by_latent_weights(
    model: tf.keras.Model, dataset, *, granularity: str = "weight",
    epsilon: float | None = None, budget: float | None = None,
    grid: Sequence[float] = sensitivity.DEFAULT_GRID, layers: Sequence[str] | None = None,
    eval_samples: int | None = None, finetune_epochs: int = 2, learning_rate: float = 1e-3,
    batch_size: int = 64, gradual: bool = False, round_to=None, seed: int = 0,
    work_dir=None,
) -> Result:
    """The whole method in one call: analyse sensitivity, prune all layers at once, fine-tune.

    The analysis uses the first ``eval_samples`` validation samples (all by
    default); ``epsilon``/``budget`` as in :func:`choose_ratios`. Fine-tuning
    runs ``finetune_epochs`` with a cosine-decayed ``learning_rate``, after
    one-shot pruning or with ``gradual`` pruning. ``model`` itself is not changed.
    ``result.model`` is shrunk (and keeps ternary weights at weight level).
    """
    method = LatentWeight(level=granularity, epsilon=epsilon, budget=budget, grid=list(grid),
                          layers=layers, eval_samples=eval_samples, epochs=finetune_epochs,
                          learning_rate=learning_rate, round_to=round_to,
                          schedule="gradual" if gradual else "oneshot")
    return method.run(model, Context(dataset, batch_size=batch_size, seed=seed,
                                     work_dir=work_dir))
