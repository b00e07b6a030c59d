"""Layer-level pruning sensitivity: prune one layer at a time, evaluate, choose ratios.

For each prunable layer alone (all others intact), prune a grid of ratios by
a score and measure validation accuracy without retraining. The trained
weights are reused and only mask variables change between points, so one
traced evaluation function serves every point (no model rebuild, no retrace).
From the curves, choose per-layer ratios: the largest ratio whose accuracy
drop stays within ``epsilon`` (:meth:`Sensitivity.ratios_within`), or a
global operations budget spread over the layers by sensitivity
(:meth:`Sensitivity.ratios_for_budget`).

The scoring rule is pluggable at two granularities:

- :class:`WeightLevel` (unstructured): ``score(layer) -> array of the kernel's
  shape``, higher = keep; the lowest ``ratio * N`` weights are masked
  (:func:`bnnprune_tf.select.select_weights`);
- :class:`ChannelLevel` (structured): ``criterion(layer) -> score per filter``
  (a :data:`bnnprune_tf.select.Criterion`), applied to the layer's channel
  groups through the graph (:func:`bnnprune_tf.select.select`).

Operations are MACs, binary and float (:func:`operations`), counted on
unmasked weights only (:mod:`bnnprune_tf.profile`).

Example::

    import numpy as np
    from bnnprune_tf import files, masks, sensitivity

    x, y = ds.arrays("val")
    level = sensitivity.WeightLevel(lambda layer: np.abs(layer.latent_kernel.numpy()))
    result = sensitivity.analyze(model, level, x, y)
    ratios = result.ratios_within(0.005)        # or result.ratios_for_budget(0.6)
    masked = masks.prunable(model)
    level.apply(masked, ratios)
    files.write_bytes("sensitivity.png", result.plot(epsilon=0.005))
    print(result.to_markdown(ratios))
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from bnnprune_tf import distribute, files, masks, profile, select
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.layer_facts import DEPTHWISE, PRODUCERS
from bnnprune_tf.reporting import Figure, markdown_table, render_png

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
WeightScore = Callable[..., np.ndarray]   # (layer) -> score per kernel entry


def operations(model: tf.keras.Model) -> int:
    """MACs per sample, binary, ternary and float, of unmasked weights (the paper's
    operation count)."""
    cost = profile.profile(model)
    return int(cost.binary_macs + cost.ternary_macs + cost.float_macs)


class WeightLevel:
    """Unstructured pruning of one layer's kernel entries by ``score``.

    ``score(layer)`` returns an array of the kernel's shape (higher = keep).
    Weights already masked (``full_mask() == 0``) score ``-inf``, so they count
    towards the ratio and stay pruned when a later ratio is larger.

    Example::

        level = WeightLevel(lambda layer: np.abs(layer.latent_kernel.numpy()))
        level.apply(masked, {"conv2": 0.5, "conv3": 0.3})
    """

    granularity = "weight"

    def __init__(self, score: WeightScore):
        self.score = score

    def units(self, model, graph: ChannelGraph) -> list[str]:
        """Every masked conv, depthwise or dense layer."""
        return [l.name for l in model.layers
                if masks.is_masked(l) and isinstance(l, PRODUCERS + DEPTHWISE)]

    def scores(self, model, graph: ChannelGraph, names: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            layer = model.get_layer(name)
            s = np.asarray(self.score(layer), dtype=np.float64)
            shape = tuple(layer.weight_mask.shape)
            if s.shape != shape:
                raise ModelError(f"weight score returned shape {s.shape} for layer {name!r}, "
                                 f"expected the kernel's shape {shape}")
            out[name] = np.where(np.asarray(layer.full_mask()) > 0, s, -np.inf)
        return out

    def apply(self, model, ratios: Mapping[str, float], graph: ChannelGraph | None = None,
              scores: Mapping[str, np.ndarray] | None = None) -> None:
        """Mask the lowest-scoring ``ratio`` of each named layer's weights (in place)."""
        graph = graph or ChannelGraph(model)
        scores = scores if scores is not None else self.scores(model, graph, list(ratios))
        for name, ratio in ratios.items():
            model.get_layer(name).set_masks(weights=select.select_weights(scores[name], ratio))


class ChannelLevel:
    """Structured pruning of one layer's filters (its channel groups) by ``criterion``.

    ``criterion(layer)`` returns one score per filter (higher = keep); scores of
    a group are summed over its producers (:func:`bnnprune_tf.select.group_scores`),
    ``round_to`` as in :func:`bnnprune_tf.select.select`. Layers whose outputs
    are fixed (e.g. the classifier) are not units; of several producers tied
    in one group (residual adds) only the first is a unit.

    Example::

        level = ChannelLevel(select.l1_filter_norm, round_to=8)
        level.apply(masked, {"conv2": 0.5})
    """

    granularity = "channel"

    def __init__(self, criterion: select.Criterion, round_to=None):
        self.criterion = criterion
        self.round_to = round_to

    def units(self, model, graph: ChannelGraph) -> list[str]:
        names, seen = [], set()
        for layer in model.layers:
            if not isinstance(layer, PRODUCERS) or not masks.is_masked(layer):
                continue
            groups = graph.groups_of(layer.name)
            ids = frozenset(g.id for g in groups)
            if all(g.prunable for g in groups) and not ids & seen:
                names.append(layer.name)
                seen |= ids
        return names

    def scores(self, model, graph: ChannelGraph, names: Sequence[str]) -> dict[int, np.ndarray]:
        return select.group_scores(graph, model, self.criterion)

    def apply(self, model, ratios: Mapping[str, float], graph: ChannelGraph | None = None,
              scores: Mapping[int, np.ndarray] | None = None) -> None:
        """Mask the lowest-scoring ``ratio`` of each named layer's channels (in place).

        A ratio of 0 leaves the layer as it is (``round_to`` does not round it down).
        """
        ratios = {name: r for name, r in ratios.items() if r > 0}
        if not ratios:
            return
        graph = graph or ChannelGraph(model)
        scores = scores if scores is not None else self.scores(model, graph, list(ratios))
        chosen = select.select(graph, scores, ratios=dict(ratios), round_to=self.round_to)
        graph.apply_masks(model, {**graph.keep_from_masks(model), **chosen})


Level = WeightLevel | ChannelLevel


def accuracy_function(model: tf.keras.Model, x: np.ndarray, y: np.ndarray,
                      batch_size: int = 256) -> Callable[[], float]:
    """A function ``() -> accuracy of model on (x, y)``, traced once and reused.

    Mask variables are read at every call, so assigning new masks needs no
    retracing. Example::

        accuracy = accuracy_function(masked, x_val, y_val)
        print(accuracy())
    """
    if len(x) != len(y) or len(x) == 0:
        raise ModelError(f"need equally many samples and labels (> 0), got {len(x)} and {len(y)}")
    batches = [(tf.constant(x[i:i + batch_size]), tf.constant(np.asarray(y[i:i + batch_size],
                                                                          np.int64)))
               for i in range(0, len(x), batch_size)]

    @tf.function(reduce_retracing=True)
    def correct(xb, yb):
        predicted = tf.argmax(model(xb, training=False), axis=-1)
        return tf.reduce_sum(tf.cast(tf.equal(predicted, yb), tf.int64))

    def accuracy() -> float:
        return float(sum(int(correct(xb, yb)) for xb, yb in batches)) / len(x)

    return accuracy


def batchnorm_recalibration(model: tf.keras.Model, x: np.ndarray,
                            batch_size: int = 256) -> Callable[[], None]:
    """A function that re-estimates every BatchNormalization layer's moving mean and
    variance on ``x`` (exact over all of ``x``, layer by layer in graph order, so each
    layer sees its predecessors' new statistics), e.g. after masks changed.

    Example::

        recalibrate = batchnorm_recalibration(masked, x_train[:1024])
        masked.get_layer("conv2").set_masks(channel=keep)
        recalibrate()
    """
    norms = [l for l in model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    probes = [tf.function(tf.keras.Model(model.inputs, bn.input)) for bn in norms]
    batches = [tf.constant(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]

    def recalibrate() -> None:
        for bn, probe in zip(norms, probes):
            axes = list(range(len(bn.input.shape) - 1))
            total = sq = 0.0
            for xb in batches:
                h = tf.cast(probe(xb), tf.float64)
                total += tf.reduce_sum(h, axes)
                sq += tf.reduce_sum(h * h, axes)
            n = len(x) * int(np.prod([d for d in bn.input.shape[1:-1]]))
            mean = total / n
            bn.moving_mean.assign(tf.cast(mean, bn.moving_mean.dtype))
            bn.moving_variance.assign(tf.cast(sq / n - mean * mean, bn.moving_variance.dtype))

    return recalibrate


@dataclass(frozen=True)
class Curve:
    """Accuracy and operations of the model with only ``layer`` pruned, per ratio (0 first)."""

    layer: str
    ratios: tuple[float, ...]
    accuracy: tuple[float, ...]
    operations: tuple[int, ...]


@dataclass(frozen=True)
class Sensitivity:
    """Per-layer curves and the rules that turn them into per-layer ratios."""

    granularity: str
    baseline_accuracy: float
    baseline_operations: int
    samples: int
    curves: dict[str, Curve]

    def drops(self, layer: str) -> np.ndarray:
        """Accuracy drop (fraction, baseline minus accuracy) at each ratio of ``layer``."""
        return self.baseline_accuracy - np.asarray(self.curves[layer].accuracy)

    def ratios_within(self, epsilon: float) -> dict[str, float]:
        """Per layer, the largest ratio whose drop, and every smaller ratio's, is <= ``epsilon``.

        Requiring the smaller ratios too means a noisy dip-and-recovery does
        not jump past a ratio that already lost accuracy; a layer whose first
        ratio loses more than ``epsilon`` gets 0 (not pruned).
        """
        if epsilon < 0:
            raise ModelError(f"epsilon is an accuracy drop and must be >= 0, got {epsilon}")
        out = {}
        for name, curve in self.curves.items():
            ok = self.drops(name) <= epsilon + 1e-12
            n = len(ok) if ok.all() else int(np.argmin(ok))
            out[name] = curve.ratios[n - 1] if n else 0.0
        return out

    def ratios_for_budget(self, fraction: float) -> dict[str, float]:
        """Per-layer ratios that keep at most ``fraction`` of the baseline operations.

        Greedy by sensitivity: starting from nothing pruned, repeatedly move
        the layer whose next grid ratio that saves operations (ratios that round to the
        same width are skipped) costs the least accuracy per operation saved (drops made monotone, negatives as 0). Savings are
        summed per layer: exact for weight level, an estimate for channel
        level (a producer's and its consumer's savings overlap).

        Raises:
            ModelError: the budget cannot be met at the grid's largest ratios.
        """
        if not 0.0 < fraction <= 1.0:
            raise ModelError(f"budget fraction must be in (0, 1], got {fraction}")
        target = fraction * self.baseline_operations
        names = list(self.curves)
        saved = {n: self.baseline_operations - np.asarray(self.curves[n].operations)
                 for n in names}
        drop = {n: np.maximum.accumulate(np.maximum(self.drops(n), 0.0)) for n in names}
        index = dict.fromkeys(names, 0)
        current = float(self.baseline_operations)
        while current > target + 1e-9:
            best = None
            for n in names:
                k = index[n]
                # the next ratio that saves anything (rounding to blocks makes plateaus)
                j = next((j for j in range(k + 1, len(saved[n])) if saved[n][j] > saved[n][k]),
                         None)
                if j is None:
                    continue
                gain = saved[n][j] - saved[n][k]
                key = ((drop[n][j] - drop[n][k]) / gain, -gain)
                if best is None or key < best[0]:
                    best = (key, n, j)
            if best is None:
                reachable = self.baseline_operations - sum(s.max() for s in saved.values())
                raise ModelError(
                    f"cannot keep only {fraction:.1%} of {self.baseline_operations:,} operations: "
                    f"the grid's largest ratios leave {reachable:,}. Raise the budget, or "
                    "analyse a grid with larger ratios")
            _, n, j = best
            current -= saved[n][j] - saved[n][index[n]]
            index[n] = j
        return {n: self.curves[n].ratios[k] for n, k in index.items()}

    def to_dict(self) -> dict:
        return {"granularity": self.granularity, "baseline_accuracy": self.baseline_accuracy,
                "baseline_operations": self.baseline_operations, "samples": self.samples,
                "curves": {n: asdict(c) for n, c in self.curves.items()}}

    def rows(self, chosen: Mapping[str, float] | None = None) -> dict[str, dict]:
        """Accuracy drop in points per layer (row) and ratio (column); ``chosen`` last."""
        rows = {}
        for name, curve in self.curves.items():
            row = {f"{r:g}": f"{100 * d:+.2f}"
                   for r, d in zip(curve.ratios[1:], self.drops(name)[1:])}
            if chosen is not None:
                row["chosen"] = float(chosen.get(name, 0.0))
            rows[name] = row
        return rows

    def to_markdown(self, chosen: Mapping[str, float] | None = None) -> str:
        """:meth:`rows` as a markdown table, with the baseline it is measured against."""
        return (f"Accuracy drop (points) with one layer pruned at {self.granularity} level; "
                f"baseline {100 * self.baseline_accuracy:.2f} % on {self.samples} samples.\n\n"
                + markdown_table(self.rows(chosen), "layer"))

    def figure(self, epsilon: float | None = None, title: str = "") -> Figure:
        """Accuracy drop (points) against ratio, one line per layer."""
        curves = self.curves.values()
        return Figure(title or f"pruning sensitivity per layer ({self.granularity} level)",
                      "line", {"": {"x": list(next(iter(curves)).ratios) if curves else [],
                                    "series": {n: [100 * float(d) for d in self.drops(n)]
                                               for n in self.curves}}},
                      xlabel=f"share of the layer pruned ({self.granularity} level)",
                      ylabel="accuracy drop (points)",
                      hlines={f"epsilon {100 * epsilon:g}": 100 * epsilon}
                      if epsilon is not None else {})

    def plot(self, epsilon: float | None = None, title: str = "") -> bytes:
        """PNG bytes of :meth:`figure`."""
        return render_png(self.figure(epsilon, title))


def _check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(float(r) for r in grid)
    if not grid or any(not 0.0 < r < 1.0 for r in grid) or list(grid) != sorted(set(grid)):
        raise ModelError(f"grid must be increasing ratios in (0, 1), e.g. {DEFAULT_GRID}; "
                         f"got {grid}")
    return grid


def analyze(model: tf.keras.Model, level: Level, x: np.ndarray, y: np.ndarray,
            grid: Sequence[float] = DEFAULT_GRID, layers: Sequence[str] | None = None,
            batch_size: int = 256, progress: bool = True,
            calibration: np.ndarray | None = None,
            checkpoint: str | os.PathLike | None = None) -> Sensitivity:
    """Prune each layer alone at each ratio of ``grid`` by ``level``; evaluate on ``(x, y)``.

    ``model`` is made prunable first (a copy) if it is not; a masked model
    gets its masks back afterwards. Scores are computed once, on the model
    as given. A tqdm progress bar counts the evaluations.

    Args:
        level: a :class:`WeightLevel` or :class:`ChannelLevel` holding the score.
        layers: layer names to analyse (default: every unit of ``level``).
        calibration: training images; if given, BatchNorm statistics are
            re-estimated on them (:func:`batchnorm_recalibration`) at every point
            before it is evaluated, and restored afterwards.
        checkpoint: a JSON file; each finished layer's curve is saved there, and a rerun
            of the same analysis (same model weights, data, grid and layers) resumes
            after the last finished layer. Under ``multi_worker`` the chief writes it
            and every worker resumes from the chief's.
    """
    from tqdm.auto import tqdm

    grid = _check_grid(grid)
    masked = masks.prunable(model)
    graph = ChannelGraph(masked)
    units = level.units(masked, graph)
    names = list(layers) if layers is not None else units
    unknown = [n for n in names if n not in units]
    if unknown or not names:
        raise ModelError(f"cannot analyse {unknown or 'no layer'} at {level.granularity} level; "
                         f"prunable layers: {units}")
    saved = {l.name: l.masks_numpy() for l in masked.layers if masks.is_masked(l)}
    scores = level.scores(masked, graph, names)
    measure = accuracy_function(masked, x, y, batch_size)
    norms = [l for l in masked.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    statistics = [[w.numpy() for w in (l.moving_mean, l.moving_variance)] for l in norms]
    recalibrate = (batchnorm_recalibration(masked, calibration, batch_size)
                   if calibration is not None else None)

    def accuracy() -> float:
        if recalibrate is not None:
            recalibrate()
        return measure()

    key = _analysis_key(masked, level, x, y, grid, names, calibration)
    base_acc, base_ops = accuracy(), operations(masked)
    curves = _load_curves(checkpoint, key)
    curves = dict(list(curves.items())[:distribute.resumable(len(curves))])
    write = checkpoint is not None and distribute.is_chief()
    try:
        with tqdm(total=len(names) * len(grid), desc=f"sensitivity ({level.granularity})",
                  disable=not progress, leave=False) as bar:
            bar.update(len(grid) * len(curves))
            for name in names:
                if name in curves:
                    continue
                acc, ops = [base_acc], [base_ops]
                for ratio in grid:
                    level.apply(masked, {name: ratio}, graph, scores)
                    acc.append(accuracy())
                    ops.append(operations(masked))
                    bar.update()
                _restore(masked, saved)
                curves[name] = Curve(name, (0.0, *grid), tuple(acc), tuple(ops))
                if write:
                    files.write_json(checkpoint, {"key": key, "curves": {
                        n: asdict(c) for n, c in curves.items()}})
    finally:
        _restore(masked, saved)
        for layer, (mean, variance) in zip(norms, statistics):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    return Sensitivity(level.granularity, base_acc, base_ops, len(x), curves)


def _analysis_key(model, level, x, y, grid, names, calibration) -> str:
    """A hash of what an analysis depends on: weights and masks, data, grid, layers."""
    digest = hashlib.sha256(repr((level.granularity, grid, list(names))).encode())
    for array in [*model.get_weights(), x, y] + ([calibration] if calibration is not None else []):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _load_curves(checkpoint, key: str) -> dict[str, Curve]:
    """The curves a checkpoint of the same analysis (``key``) holds; {} otherwise."""
    try:
        saved = json.loads(Path(checkpoint).read_text()) if checkpoint is not None else {}
    except (OSError, ValueError):
        return {}
    if saved.get("key") != key:
        return {}
    return {n: Curve(c["layer"], tuple(c["ratios"]), tuple(c["accuracy"]),
                     tuple(c["operations"])) for n, c in saved["curves"].items()}


def _restore(model, saved: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    for name, m in saved.items():
        model.get_layer(name).set_masks(channel=m["channel_mask"],
                                        input_channels=m["input_channel_mask"],
                                        weights=m["weight_mask"])
