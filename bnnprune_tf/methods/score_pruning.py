"""The generic pruner: a method that only scores is a criterion run by :class:`ScorePruning`.

As Torch-Pruning's importance classes are run by one pruner, a score-only
method overrides :meth:`ScorePruning.filter_scores` (layer -> one score per
filter, higher = keep) and, for unstructured pruning,
:meth:`ScorePruning.weight_scores` (layer -> one score per kernel entry);
everything else is shared:

- the target (:class:`ScoreParams`): one ``ratio`` for every channel group,
  per-layer ``ratios`` or ``widths``, or a sensitivity analysis on validation
  data (``epsilon``: largest accuracy drop per layer, or ``budget``: share of
  operations to keep; :mod:`bnnprune_tf.sensitivity`);
- the level: ``channel`` (filters, through the channel graph, with
  ``round_to``) or ``weight`` (kernel entries; ternary weights);
- when: ``oneshot`` (masks set when ``fit`` begins; the rest of ``fit``
  fine-tunes with the masks fixed) or ``gradual`` (a tfmot
  ``PolynomialDecay`` ramp over the first half of ``fit``).

Registered here: ``l1`` (sum of |latent weight| per filter) and ``random``
(seeded; the baseline every method must beat).

Example::

    from bnnprune_tf import methods

    method = methods.get("l1")(ratio=0.5, round_to="lce", epochs=2)
    masked = method.prepare(model)
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(x, y, epochs=2, callbacks=method.callbacks())   # pruned at the first step
    print(method.finalize(masked).tables)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import tensorflow as tf
from pydantic import Field, model_validator

from bnnprune_tf import layer_facts, masks, select, sensitivity
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.methods.registry import register
from bnnprune_tf.methods.base import Method, Params, Result, RoundTo
from bnnprune_tf.prune import kept_widths, prune_filters, strip_pruning


class ScoreParams(Params):
    """Target, level and timing of score-based pruning (exactly one target)."""

    level: Literal["channel", "weight"] = "channel"
    ratio: float | None = Field(None, ge=0, lt=1)
    ratios: dict[str, float] | None = None
    widths: dict[str, int] | None = None
    epsilon: float | None = Field(None, ge=0)        # sensitivity: accuracy drop per layer
    budget: float | None = Field(None, gt=0, le=1)   # sensitivity: share of operations kept
    grid: list[float] = list(sensitivity.DEFAULT_GRID)
    layers: list[str] | None = None                  # sensitivity: layers analysed
    eval_samples: int | None = Field(None, gt=0)     # sensitivity: validation samples used
    recalibrate_bn: int = Field(0, ge=0)             # sensitivity: training images for BN
    round_to: RoundTo = None
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    seed: int = 0

    default_epsilon: ClassVar[float | None] = None    # the target when none is given

    @model_validator(mode="after")
    def _one_target(self):
        given = [k for k in ("ratio", "ratios", "widths", "epsilon", "budget")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one target, not {' and '.join(given)}")
        if not given and self.default_epsilon is None:
            raise ValueError("give a target: ratio, ratios, widths, epsilon or budget")
        if not given:
            self.epsilon = self.default_epsilon
        if self.widths is not None and self.schedule == "gradual":
            raise ValueError("a widths target prunes at once: use schedule 'oneshot'")
        if self.level == "weight" and (self.widths is not None or self.round_to is not None):
            raise ValueError("widths and round_to count channels: use them with level 'channel'")
        if self.ratios and not all(0 <= r < 1 for r in self.ratios.values()):
            raise ValueError("every ratio must be in [0, 1)")
        return self

    @property
    def uses_sensitivity(self) -> bool:
        return self.epsilon is not None or self.budget is not None


class PruneOnSchedule(tf.keras.callbacks.Callback):
    """Calls ``prune(model, fraction)`` inside ``fit``: once at the first step
    (``schedule=None``), or at each pruning step of a tfmot schedule with
    ``fraction = sparsity / final sparsity``. ``self.events`` lists ``(step, fraction)``.

    Example::

        PruneOnSchedule(lambda model, f: method.apply(model, f), gradual_schedule(400))
    """

    def __init__(self, prune, schedule=None):
        super().__init__()
        self.prune, self.schedule = prune, schedule
        self.events: list[tuple[int, float]] = []
        self._final = final_sparsity(schedule) if schedule is not None else 1.0

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        return int(optimizer.iterations.numpy()) if optimizer is not None else 0

    def _apply(self, fraction: float) -> None:
        self.prune(self.model, fraction)
        self.events.append((self._step(), fraction))

    def on_train_begin(self, logs=None):
        masks.require_masks(self.model, type(self).__name__)
        step = self._step()
        if step > 0 and not self.events:
            # a fit resumed from a backup: the masks were restored with the weights; note
            # the prunings the interrupted fit made instead of pruning again
            self.events = [(0, 1.0)] if self.schedule is None else [
                (s, min(1.0, float(sparsity) / self._final)) for s in range(step)
                for should, sparsity in [self.schedule(s)] if bool(should)]
        if self.schedule is None and not self.events:
            self._apply(1.0)

    def on_train_batch_begin(self, batch, logs=None):
        if self.schedule is None:
            return
        should_prune, sparsity = self.schedule(self._step())
        if bool(should_prune):
            self._apply(min(1.0, float(sparsity) / self._final))


def final_sparsity(schedule) -> float:
    """The end sparsity of a tfmot ``PolynomialDecay`` or ``ConstantSparsity``."""
    config = schedule.get_config().get("config", {})
    final = config.get("final_sparsity", config.get("target_sparsity"))
    if not final:
        raise ModelError(f"cannot read the final sparsity of {type(schedule).__name__}: use "
                         "tfmot.sparsity.keras.PolynomialDecay or ConstantSparsity with a "
                         "final sparsity > 0")
    return float(final)


def gradual_schedule(total_steps: int):
    """A cubic ramp to the full target over the first half of ``total_steps``, 8 prunings."""
    import tensorflow_model_optimization as tfmot

    frequency = max(1, total_steps // 16)
    return tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8 * frequency,
                                                frequency=frequency)


class ScorePruning(Method):
    """Prune by scores at a target; subclasses define the scores (see module doc)."""

    Params = ScoreParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.ratios: dict[str, float] | None = None
        self.analysis: sensitivity.Sensitivity | None = None
        self.steps: int | None = None          # steps of the fit, for the gradual schedule
        self._callback: PruneOnSchedule | None = None
        self._validation = None
        self.before: dict = {}
        self.checkpoint = None      # a JSON file: the sensitivity scan resumes from it

    # ------------------------------------------------------------ scores
    def filter_scores(self, layer) -> np.ndarray:
        """One score per output filter of ``layer``; higher = keep."""
        raise ModelError(f"method {self.name!r} does not score filters: use level 'weight'")

    def weight_scores(self, layer) -> np.ndarray:
        """One score per kernel entry of ``layer``; higher = keep."""
        raise ModelError(f"method {self.name!r} does not score weights: use level 'channel'")

    def level(self) -> sensitivity.Level:
        if self.params.level == "weight":
            return sensitivity.WeightLevel(self.weight_scores)
        return sensitivity.ChannelLevel(self.filter_scores, self.params.round_to)

    # ------------------------------------------------------------ hooks
    def prepare(self, model, validation_data=None, calibration_data=None):
        """A masked copy; with ``epsilon``/``budget``, the sensitivity analysis runs here on
        ``validation_data`` (BatchNorm re-estimated on ``calibration_data`` images if
        ``recalibrate_bn``)."""
        prepared = super().prepare(model)
        p = self.params
        self._validation = validation_data
        self.before = self._measure(prepared)
        if p.uses_sensitivity:
            if validation_data is None:
                raise ModelError(f"method {self.name!r} with epsilon/budget runs a sensitivity "
                                 "analysis: pass validation_data=(x_val, y_val) to prepare")
            x, y = validation_data
            x, y = x[:p.eval_samples], y[:p.eval_samples]
            calibration = None
            if p.recalibrate_bn:
                if calibration_data is None:
                    raise ModelError("recalibrate_bn needs training images: pass "
                                     "calibration_data=x_train to prepare")
                calibration = calibration_data[:p.recalibrate_bn]
            self.analysis = sensitivity.analyze(prepared, self.level(), x, y, p.grid, p.layers,
                                                progress=False, calibration=calibration,
                                                checkpoint=self.checkpoint)
            self.ratios = (self.analysis.ratios_for_budget(p.budget) if p.budget is not None
                           else self.analysis.ratios_within(p.epsilon))
        elif p.ratios is not None:
            self.ratios = dict(p.ratios)
        elif p.ratio is not None and p.level == "weight":
            self.ratios = {n: p.ratio for n in self.level().units(prepared, ChannelGraph(prepared))}
        return prepared

    def apply(self, model: tf.keras.Model, fraction: float = 1.0) -> None:
        """Mask ``model`` (in place) at ``fraction`` of the target."""
        p = self.params
        if p.level == "weight":
            level = self.level()
            graph = ChannelGraph(model)
            level.apply(model, {n: r * fraction for n, r in self.ratios.items()}, graph)
            graph.apply_masks(model, select.keep_nonempty(graph, model))
        elif p.widths is not None:
            prune_filters(model, self.filter_scores, widths=p.widths, round_to=p.round_to)
        elif self.ratios is not None:
            prune_filters(model, self.filter_scores,
                          ratios={n: r * fraction for n, r in self.ratios.items()},
                          round_to=p.round_to)
        else:
            prune_filters(model, self.filter_scores, ratio=p.ratio * fraction,
                          round_to=p.round_to)

    def callbacks(self):
        schedule = None
        if self.params.schedule == "gradual":
            if not self.steps:
                raise ModelError("schedule 'gradual' needs the number of training steps: set "
                                 "method.steps = epochs * steps per epoch before fit")
            schedule = gradual_schedule(self.steps)
        self._callback = PruneOnSchedule(self.apply, schedule)
        return [self._callback]

    def _measure(self, model) -> dict:
        """Operations (binary + float MACs of unmasked weights) and validation accuracy."""
        out = {"operations": sensitivity.operations(model)}
        if self._validation is not None:
            out["val_accuracy"] = sensitivity.accuracy_function(model, *self._validation)()
        return out

    def finalize(self, model):
        result = Result(strip_pruning(model, keep_weight_masks=True), model)
        after = self._measure(model)
        result.metrics.update(widths=kept_widths(model), before=self.before, after=after)
        if self.before:
            result.metrics["operations_reduction"] = \
                1.0 - after["operations"] / self.before["operations"]
        if self.ratios is not None:
            result.metrics["ratios"] = self.ratios
        if self.params.level == "weight":
            result.notes.append("Weight-level pruning leaves ternary weights (zeros inside kept "
                                "filters): LCE cannot run them; deploy with the C runtime "
                                "(converters.c_export, the firmware stage).")
        if self._callback is not None:
            result.metrics["prune_events"] = self._callback.events
        if self.analysis is not None:
            result.metrics["sensitivity"] = self.analysis.to_dict()
            result.tables[f"Sensitivity: accuracy drop (points) with one layer pruned, "
                          f"baseline {100 * self.analysis.baseline_accuracy:.2f} % on "
                          f"{self.analysis.samples} validation samples"] = \
                self.analysis.rows(self.ratios)
            result.figures["sensitivity"] = self.analysis.figure(self.params.epsilon)
        return result

    def run(self, model, context):
        from bnnprune_tf import training

        if self.params.schedule == "gradual":
            self.steps = self.params.epochs * training.steps_per_epoch(context.dataset,
                                                                       context.batch_size)
        n = self.params.recalibrate_bn
        if context.work_dir is not None:
            self.checkpoint = context.work_dir / "sensitivity.json"
        prepared = self.prepare(model, context.dataset.arrays("val"),
                                calibration_data=context.dataset.arrays("train", n)[0] if n
                                else None)
        return self.train_and_finalize(prepared, context)


@register("l1")
class L1(ScorePruning):
    """Filters with the smallest sum of |latent weight| go (Li et al., ICLR 2017)."""

    def filter_scores(self, layer):
        return select.l1_filter_norm(layer)

    def weight_scores(self, layer):
        return np.abs(np.asarray(layer_facts.latent_kernel(layer)))


@register("random")
class Random(ScorePruning):
    """Seeded uniform random scores: the baseline every method must beat."""

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._rng = np.random.default_rng(self.params.seed)

    def filter_scores(self, layer):
        return self._rng.random(int(layer.output.shape[-1]))

    def weight_scores(self, layer):
        return self._rng.random(tuple(layer.weight_mask.shape))

