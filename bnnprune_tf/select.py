"""Turn channel scores into keep-masks under a target, group by group.

A *criterion* scores the filters of one producer layer (higher = more
important); :func:`group_scores` sums the producers' scores over a channel
group (all convs whose outputs are added share channels). :func:`select`
keeps the best-scoring channels of each group so that the kept count meets
the target (a global ratio, per-layer ratios, or per-layer widths), rounded
with ``round_to``, never removing every channel of a group.

Why ``round_to``: LCE packs a binary conv's *input* channels into 32-bit words
and computes its *output* channels in blocks of 8 (aarch64), so 48 kept input
channels cost as much as 64 and 60 kept filters as much as 64. Rounding the
kept count *down* to a multiple makes the pruned channels turn into speed.
``round_to="lce"`` picks 32 for groups read by a binary conv, 8 for groups
written by one, and no rounding otherwise.

Example::

    from bnnprune_tf import graph, select
    g = graph.ChannelGraph(model)
    scores = select.group_scores(g, model, select.l1_filter_norm)
    keep = select.select(g, scores, ratio=0.5, round_to="lce")
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from bnnprune_tf import layer_facts, masks
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph

Criterion = Callable[..., np.ndarray]   # (layer) -> score per output channel


def l1_filter_norm(layer) -> np.ndarray:
    """Sum of |latent weight| per filter (the last kernel axis)."""
    k = np.abs(np.asarray(layer_facts.latent_kernel(layer)))
    return k.reshape(-1, k.shape[-1]).sum(axis=0)


def random_scores(seed: int = 0) -> Criterion:
    """A criterion with seeded uniform random scores (the baseline every method must beat)."""
    rng = np.random.default_rng(seed)

    def score(layer) -> np.ndarray:
        return rng.random(int(layer.output.shape[-1]))

    return score


CRITERIA: dict[str, Callable[[int], Criterion]] = {
    "l1": lambda seed: l1_filter_norm,
    "random": random_scores,
}


def get_criterion(criterion: str | Criterion, seed: int = 0) -> Criterion:
    if callable(criterion):
        return criterion
    if criterion not in CRITERIA:
        raise ModelError(f"unknown criterion {criterion!r}: use one of {', '.join(CRITERIA)} "
                         "or pass a function layer -> score per filter")
    return CRITERIA[criterion](seed)


def group_scores(graph: ChannelGraph, model, criterion: Criterion) -> dict[int, np.ndarray]:
    """Score per channel of every prunable group: the sum of its producers' filter scores.

    Channels already pruned (no consumer reads them) score ``-inf``, so
    pruning again with a larger target never brings them back.
    """
    kept = graph.keep_from_masks(model) if masks.has_masks(model) else {}
    scores = {}
    for g in graph.prunable_groups():
        total = np.zeros(g.size)
        for name, filters in g.filters.items():
            layer = model.get_layer(name)
            s = np.asarray(criterion(layer), dtype=np.float64)
            n = int(layer.output.shape[-1])
            if s.shape != (n,):
                raise ModelError(f"criterion returned shape {s.shape} for layer {name!r}, "
                                 f"expected ({n},)")
            total += s[filters].reshape(g.size, -1).sum(axis=1)
        if g.id in kept:
            total[~kept[g.id]] = -np.inf
        scores[g.id] = total
    return scores


def multiple_of(graph: ChannelGraph, group, round_to) -> int:
    """The channel multiple ``round_to`` asks of ``group`` (``"lce"``: 32 where a binary
    conv reads the channels, 8 where only one writes them, else 1)."""
    if round_to == "lce":
        if graph.binary_consumers(group):
            return 32
        return 8 if graph.binary_producers(group) else 1
    if isinstance(round_to, Mapping):
        multiple = max(int(round_to.get(n, 1)) for n in group.producers)
    else:
        multiple = 1 if round_to is None else int(round_to)
    if multiple < 1:
        raise ModelError(f"round_to must be a channel multiple >= 1 or 'lce', got {round_to!r}")
    return multiple


def kept_count(size: int, target_keep: float, multiple: int) -> int:
    """``target_keep`` rounded down to a multiple (at least one multiple, at most ``size``)."""
    keep = max(1, int(np.floor(target_keep + 1e-9)))
    if multiple > 1:
        keep = max(multiple, keep // multiple * multiple)
    return min(size, keep)


def select(graph: ChannelGraph, scores: dict[int, np.ndarray], ratio: float | None = None,
           ratios: Mapping[str, float] | None = None, widths: Mapping[str, int] | None = None,
           round_to: int | str | Mapping[str, int] | None = None) -> dict[int, np.ndarray]:
    """Keep-masks per group (group id -> bool array) under exactly one target.

    Args:
        ratio: prune this share of channels of every prunable group.
        ratios: ``{producer layer name: share to prune}``; other groups kept.
        widths: ``{producer layer name: channels to keep}``; other groups kept.
        round_to: an int, ``"lce"`` (see module doc), or ``{layer: int}``.

    Ties in score keep the lower channel index.
    """
    given = [t is not None for t in (ratio, ratios, widths)]
    if sum(given) != 1:
        raise ModelError("give exactly one target: ratio=, ratios= or widths=")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise ModelError(f"ratio must be in [0, 1), got {ratio}")
    named = ratios if ratios is not None else widths
    targets: dict[int, float] = {}
    if named is not None:
        for name, value in named.items():
            groups = graph.groups_of(name)
            if widths is not None and len(groups) != 1:
                raise ModelError(f"layer {name!r} spans {len(groups)} channel groups (its outputs "
                                 "are added to a concatenation); give it a ratio, not a width")
            for group in groups:
                if not group.prunable:
                    raise ModelError(f"layer {name!r} cannot be pruned: {group.fixed_reason}")
                if ratios is not None and not 0.0 <= value < 1.0:
                    raise ModelError(f"ratio for {name!r} must be in [0, 1), got {value}")
                if widths is not None and not 1 <= value <= group.size:
                    raise ModelError(f"width for {name!r} must be in [1, {group.size}], got {value}")
                keep = (1.0 - value) * group.size if ratios is not None else float(value)
                targets[group.id] = min(targets.get(group.id, np.inf), keep)
    else:
        targets = {g.id: (1.0 - ratio) * g.size for g in graph.prunable_groups()}
    keep_masks = {}
    for group_id, target in targets.items():
        group = graph.groups[group_id]
        n = kept_count(group.size, target, multiple_of(graph, group, round_to))
        s = scores[group_id]
        n = min(n, max(1, int(np.isfinite(s).sum())))
        order = np.lexsort((np.arange(group.size), -s))    # best score first, low index on ties
        keep = np.zeros(group.size, bool)
        keep[order[:n]] = True
        keep_masks[group_id] = keep
    return keep_masks


def select_weights(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Keep-mask (bool, the shape of ``scores``) pruning the ``floor(ratio * N)`` lowest scores.

    The weight-level counterpart of :func:`select` (unstructured pruning).
    Entries scored ``-inf`` (e.g. weights pruned before) go first; ties in
    score prune the higher flat (C-order) index first, as :func:`select` keeps
    the lower channel index.

    Example::

        keep = select_weights(np.abs(layer.latent_kernel.numpy()), 0.5)
        layer.set_masks(weights=keep)
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 <= ratio < 1.0:
        raise ModelError(f"weight ratio must be in [0, 1), got {ratio}")
    if np.isnan(scores).any():
        raise ModelError("weight scores contain NaN; give every weight a number (-inf = pruned)")
    flat = scores.ravel()
    n_pruned = max(int(np.floor(ratio * flat.size + 1e-9)), int(np.isneginf(flat).sum()))
    n_pruned = min(n_pruned, flat.size - 1)
    order = np.lexsort((np.arange(flat.size), -flat))   # best first, low index on ties
    keep = np.ones(flat.size, bool)
    keep[order[flat.size - n_pruned:]] = False
    return keep.reshape(scores.shape)


def keep_nonempty(graph: ChannelGraph, model) -> dict[int, np.ndarray]:
    """Keep-masks (as :func:`select`) that also drop channels whose filters are all zero.

    A channel of a prunable group is dropped when, in every producer, its
    filter has no unmasked weight left (weight masks from unstructured
    pruning). Such a filter outputs a constant, so dropping it changes the
    model slightly: apply it before fine-tuning. Channels pruned before stay
    pruned; a group never loses its last channel. Apply with
    ``graph.apply_masks(model, keep)``; afterwards :func:`bnnprune_tf.shrink.shrink`
    removes these channels.

    Example::

        graph = ChannelGraph(masked)
        graph.apply_masks(masked, select.keep_nonempty(graph, masked))
    """
    if not masks.has_masks(model):
        raise ModelError(f"model {model.name!r} has no masks; make it prunable first "
                         "(bnnprune_tf.masks.prunable) and set weight masks")
    keep = graph.keep_from_masks(model)
    for group in graph.prunable_groups():
        alive = np.zeros(group.size, bool)
        for name, filters in group.filters.items():
            full = np.asarray(model.get_layer(name).full_mask())
            alive |= full.reshape(-1, full.shape[-1]).any(axis=0)[filters].reshape(
                group.size, -1).any(axis=1)
        if (keep[group.id] & alive).any():
            keep[group.id] = keep[group.id] & alive
    return keep
