"""ETB: evolution from ternary to binary, with a pruning-ratio controller (Xu Tu et al.,
J. Jilin Univ. (Inf. Sci. Ed.) 2024, 42(2):356-365).

Only the abstract is public: the algorithm here is OUR RECONSTRUCTION
(``../shared/reference/methods.md`` section 5). The abstract gives trainable
quantisation thresholds on weights and activations that evolve each filter
"from ternary to binary or zero", a pruning-ratio adjustment algorithm, and
removal of the all-zero filters after training with no fine-tuning. Design
choices made here:

1. Quantizers (:mod:`bnnprune_tf.ternary`): every binary conv producing prunable
   channels gets :class:`~bnnprune_tf.ternary.TernaryWeight` (one trainable
   threshold per filter, relative to the kernel's mean ``|w|`` and initialised at
   ``init_threshold``, so training starts ternary); every binary-input conv gets
   :class:`~bnnprune_tf.ternary.TernaryActivation` (one per input channel, starting at
   ``activation_threshold``, pulled to 0 by an L1 term ``activation_decay``).
2. The terms below act on the thresholds only (no gradient to the latent weights,
   which the task loss alone trains).
   Polarisation: ``4 z (1 - z)`` of each channel's smooth zero fraction ``z`` (mean
   over the producers of a channel group), weighted by the binary parameters the
   channel carries; its weight rises linearly from 0 to ``polarization``.
3. Sparsity pressure ``lambda * sum_c w_c (1 - z_c)``, the binary parameters still
   nonzero (``w_c``: the channel's share of binary parameters, in the channel itself
   and in the binary convs reading it).
4. Controller: every ``control_every`` steps the removed share ``r`` of binary
   parameters (a channel counts as removed when its producers' mean hard zero
   fraction is >= 0.5) is measured; ``lambda += gain * (setpoint - r)``, an integral
   rule whose ``lambda`` may turn negative to give filters back after an overshoot.
   The setpoint rises to ``ratio`` over the first ``ramp`` of the evolution (cubic,
   like tfmot's ``PolynomialDecay``).
5. Decision: after ``1 - settle`` of the training steps each channel is fixed as
   binary or zero (its thresholds become 0 or infinite, the float producers of
   residual groups are masked, consumers' input masks set through the channel
   graph), and the rest of ``fit`` trains the decided network. That last part is
   training, not fine-tuning after pruning: at the end every kept filter is pure
   binary, so removing the zero filters (:func:`bnnprune_tf.shrink.shrink`) is
   lossless, and BatchNorm's offset on a removed channel never reaches a consumer
   (its input mask, and its activation threshold, make it 0).
6. Residual networks: channels tied by adds are one group of the channel graph,
   decided together (their producers' zero fractions averaged).
7. ``max_layer_ratio`` (ours; default 1, as in the paper: no limit) caps the share of
   each group that may go: a group at its floor gets no more sparsity pressure, and
   the decision keeps its floor. Without it, a run can empty a whole layer down to one
   channel: filters with few weights (the first layers') turn all-zero first.

Example (a user's own compile/fit)::

    from bnnprune_tf import methods
    method = methods.get("etb")(ratio=0.46)
    evolving = method.prepare(model)                  # a copy with ternary quantizers
    evolving.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    evolving.fit(x, y, epochs=8, callbacks=method.callbacks())
    result = method.finalize(evolving)
    result.model                                      # plain BNN, zero filters removed
    result.metrics["binary_params_reduction"]         # about 0.46
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import larq as lq
import numpy as np
import tensorflow as tf
from pydantic import Field

from bnnprune_tf import layer_facts, masks
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph, ChannelGroup
from bnnprune_tf.methods.base import Method, Params, Result, copy_masked
from bnnprune_tf.methods.registry import register
from bnnprune_tf.reporting import Figure
from bnnprune_tf.shrink import shrink
from bnnprune_tf.ternary import TernaryActivation, TernaryWeight

_STATE = ("bias", "channel_mask", "input_channel_mask", "weight_mask", "frozen_kernel")
HISTOGRAM_BINS = 10


class ETBParams(Params):
    """ETB's parameters; ``ratio`` is the target share of binary parameters removed."""

    ratio: float = Field(ge=0, lt=1)
    # the largest share of one channel group that may go (Torch-Pruning's
    # max_pruning_ratio): below 1, a group never shrinks to its last channels
    max_layer_ratio: float = Field(1.0, gt=0, le=1)
    epochs: int = Field(10, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    polarization: float = Field(1.0, ge=0)          # final weight of the polarising term
    gain: float = Field(5.0, gt=0)                  # controller: lambda change per unit error
    control_every: int = Field(10, ge=1)            # controller period, in training steps
    ramp: float = Field(0.5, gt=0, le=1)            # share of the evolution the setpoint rises
    settle: float = Field(0.3, gt=0, lt=1)          # share of training after the decision
    init_threshold: float = Field(0.5, ge=0)        # initial filter threshold / mean |w|
    activation_threshold: float = Field(0.05, ge=0)
    activation_decay: float = Field(1e-3, ge=0)
    temperature: float = Field(0.5, gt=0)           # surrogate sigmoid width (see ternary.py)
    threshold_speed: float = Field(10.0, gt=0)      # thresholds' learning rate / the weights' 
    log_dir: str | None = None                      # TensorBoard: histograms and controller


def _sign_conv(layer) -> bool:
    """A Larq conv whose kernel quantizer is Larq's sign (what a TernaryWeight replaces)."""
    return isinstance(layer, lq.layers.QuantConv2D) and \
        layer_facts.is_sign(layer_facts.kernel_quantizer(layer))


def evolvable_groups(graph: ChannelGraph) -> list[ChannelGroup]:
    """Prunable channel groups with at least one binary (sign) conv among their producers."""
    return [g for g in graph.prunable_groups()
            if any(_sign_conv(graph.model.get_layer(p)) for p in g.producers)]


def _copy_state(old, new) -> None:
    """Copy variables between two clones of a layer that differ only in their quantizers."""
    if not masks.is_masked(old):
        new.set_weights(old.get_weights())
        return
    layer_facts.latent_kernel(new).assign(layer_facts.latent_kernel(old))
    for name in _STATE:
        if getattr(old, name, None) is not None:
            getattr(new, name).assign(getattr(old, name))
    for attr in ("kernel_quantizer", "input_quantizer"):
        a, b = getattr(old, attr, None), getattr(new, attr, None)
        if isinstance(a, (TernaryWeight, TernaryActivation)) and type(a) is type(b):
            b.threshold.assign(a.threshold)
            b.decision.assign(a.decision)


def _swap_quantizers(model: tf.keras.Model, quantizers) -> tf.keras.Model:
    """A clone of ``model`` with ``quantizers(layer) -> {config key: quantizer}`` swapped in."""

    def clone(layer):
        return type(layer).from_config({**layer.get_config(), **quantizers(layer)})

    new = tf.keras.models.clone_model(model, clone_function=clone)
    for old_layer, new_layer in zip(model.layers, new.layers):
        _copy_state(old_layer, new_layer)
    return new


def to_binary(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` with every ternary quantizer replaced by Larq's ``ste_sign`` (a copy).

    Decided binary channels compute the same values; zero channels are masked
    (after :meth:`ETB.finalize` decided), so the copy computes what ``model`` does.
    """
    def swap(layer):
        return {attr: "ste_sign" for attr in ("kernel_quantizer", "input_quantizer")
                if isinstance(getattr(layer, attr, None), (TernaryWeight, TernaryActivation))}

    return _swap_quantizers(model, swap)


@dataclass
class _Plan:
    """What ETB evolves in one prepared model (made by :meth:`ETB.prepare`)."""

    graph: ChannelGraph
    groups: list[ChannelGroup]
    weight_layers: list[str]          # convs with TernaryWeight
    activation_layers: list[str]      # convs with TernaryActivation
    binary: dict[str, int]            # binary convs (binary input and weights): k*k
    shares: dict[int, np.ndarray]     # group id -> share of binary params per channel
    dense_params: int
    floor: dict[int, int]             # group id -> channels max_layer_ratio keeps (may be 0)

    def least(self, group_id: int) -> int:
        """Channels a group keeps at least: its floor, and never none."""
        return max(1, self.floor[group_id])

    def binary_params(self, keep: dict[int, np.ndarray]) -> int:
        g = self.graph
        return int(sum(kk * g.layout_mask(g.inputs[n], keep).sum()
                       * g.layout_mask(g.outputs[n], keep).sum() for n, kk in self.binary.items()))

    def channel_zero_fraction(self, per_layer: dict, group: ChannelGroup) -> tf.Tensor:
        """Mean over the group's ternary producers of their filters' zero fractions."""
        parts = [tf.reduce_mean(tf.reshape(tf.gather(per_layer[name], np.ravel(filters)),
                                           (group.size, -1)), axis=1)
                 for name, filters in group.filters.items() if name in per_layer]
        return tf.add_n(parts) / len(parts)


@register("etb")
class ETB(Method):
    """Evolution from ternary to binary with a pruning-ratio controller (reconstruction)."""

    Params = ETBParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.plan: _Plan | None = None
        # made by prepare, under the caller's strategy scope (a method is often built
        # before TensorFlow starts, which multi_worker must configure first)
        self.pressure: tf.Variable | None = None
        self.polarize: tf.Variable | None = None
        self.open: tf.Variable | None = None     # per group: 1 above its floor, else 0
        self.controller: EvolutionController | None = None

    # ------------------------------------------------------------ hooks
    def check(self, model: tf.keras.Model) -> None:
        graph = ChannelGraph(model)
        if not evolvable_groups(graph):
            raise ModelError(
                f"etb: nothing to prune in model {model.name!r}: no prunable channel group "
                "is produced by a binary (sign-kernel) QuantConv2D; every group is fixed "
                "(a model output, a model input) or made by float layers only")

    def prepare(self, model, validation_data=None, calibration_data=None) -> tf.keras.Model:
        self.check(model)
        masked = copy_masked(model)
        graph = ChannelGraph(masked)
        groups = evolvable_groups(graph)
        producers = {p for g in groups for p in g.producers}
        weight_layers = [l.name for l in masked.layers if l.name in producers and _sign_conv(l)]
        activation_layers = [l.name for l in masked.layers if masks.is_masked(l)
                             and isinstance(l, lq.layers.QuantConv2D)
                             and layer_facts.is_binary_input(l)]
        binary = {l.name: int(np.prod(layer_facts.latent_kernel(l).shape[:-2]))
                  for l in masked.layers if layer_facts.is_binary_conv(l)}
        p = self.params

        def quantizers(layer):
            swap = {}
            if layer.name in weight_layers:
                swap["kernel_quantizer"] = TernaryWeight(
                    layer.filters, initial=p.init_threshold, temperature=p.temperature,
                    speed=p.threshold_speed)
            if layer.name in activation_layers:
                channels = int(layer_facts.latent_kernel(layer).shape[-2])
                swap["input_quantizer"] = TernaryActivation(
                    channels, initial=p.activation_threshold, temperature=p.temperature,
                    speed=p.threshold_speed)
            return swap

        evolving = _swap_quantizers(masked, quantizers)
        graph = ChannelGraph(evolving)           # same layers, so the same group ids
        floor = {g.id: math.ceil(round((1.0 - p.max_layer_ratio) * g.size, 6)) for g in groups}
        self.plan = _Plan(graph, [graph.groups[g.id] for g in groups], weight_layers,
                          activation_layers, binary, {}, 0, floor)
        self.plan.dense_params = self.plan.binary_params({})
        self.plan.shares = self._channel_shares()
        self.pressure = tf.Variable(0.0, trainable=False, name="etb_pressure")
        self.polarize = tf.Variable(0.0, trainable=False, name="etb_polarization")
        self.open = tf.Variable(tf.ones(len(self.plan.groups)), trainable=False,
                                name="etb_open_groups")
        evolving.add_loss(self.loss(evolving))
        return evolving

    def _channel_shares(self) -> dict[int, np.ndarray]:
        """Share of the dense binary parameters that removing each channel alone frees."""
        plan, shares = self.plan, {}
        for g in plan.groups:
            freed = np.zeros(g.size)
            for i in range(g.size):
                keep = np.ones(g.size, bool)
                keep[i] = False
                freed[i] = plan.dense_params - plan.binary_params({g.id: keep})
            shares[g.id] = freed / max(plan.dense_params, 1)
        return shares

    def loss(self, model: tf.keras.Model):
        plan, p = self.plan, self.params
        weight_layers = [model.get_layer(n) for n in plan.weight_layers]
        act_quantizers = [model.get_layer(n).input_quantizer for n in plan.activation_layers]

        def term():
            z = {l.name: l.kernel_quantizer.soft_zero_fraction(l.latent_kernel)
                 for l in weight_layers}
            polar, pressure = 0.0, 0.0
            for j, g in enumerate(plan.groups):
                zbar = plan.channel_zero_fraction(z, g)
                share = tf.constant(plan.shares[g.id], tf.float32)
                polar += tf.reduce_sum(share * 4.0 * zbar * (1.0 - zbar))
                # kept weights cost, in the groups above their floor
                pressure += self.open[j] * tf.reduce_sum(share * (1.0 - zbar))
            total = self.polarize * polar + self.pressure * pressure
            if act_quantizers and p.activation_decay:
                total += p.activation_decay * tf.add_n(
                    [tf.reduce_mean(q.threshold) for q in act_quantizers]) / len(act_quantizers)
            return total

        return term

    def callbacks(self) -> list[tf.keras.callbacks.Callback]:
        if self.plan is None:
            raise ModelError("etb: call method.prepare(model) before method.callbacks()")
        self.controller = EvolutionController(self)
        return [self.controller]

    # ------------------------------------------------------------ state
    def zero_fractions(self, model) -> dict[str, np.ndarray]:
        """Per ternary conv, each filter's share of zero weights now."""
        return {n: model.get_layer(n).kernel_quantizer.zero_fraction(
            layer_facts.latent_kernel(model.get_layer(n))).astype(np.float32)
            for n in self.plan.weight_layers}

    def hard_keep(self, model) -> dict[int, np.ndarray]:
        """Channels kept now: the mean zero fraction of their producers is below 0.5,
        and at least :meth:`_Plan.least` per group (its channels of lowest zero fraction)."""
        z = self.zero_fractions(model)
        keep = {}
        for g in self.plan.groups:
            zbar = self.plan.channel_zero_fraction(z, g).numpy()
            k = zbar < 0.5
            least = self.plan.least(g.id)
            if k.sum() < least:
                k[np.argsort(zbar, kind="stable")[:least]] = True
            keep[g.id] = k
        return keep

    def close_groups_at_floor(self, keep: dict[int, np.ndarray]) -> None:
        """No sparsity pressure on the groups that ``keep`` leaves at their floor."""
        self.open.assign([float(keep[g.id].sum() > self.plan.floor[g.id])
                          for g in self.plan.groups])

    def closest_keep(self, model) -> dict[int, np.ndarray]:
        """Keep-masks removing the channels of highest zero fraction, as many as bring
        the removed share of binary parameters closest to ``ratio``."""
        z = self.zero_fractions(model)
        plan, target = self.plan, self.params.ratio
        zbar = {g.id: plan.channel_zero_fraction(z, g).numpy() for g in plan.groups}
        order = sorted(((-zbar[g][i], g, i) for g in zbar for i in range(len(zbar[g]))))
        keep = {g: np.ones(len(v), bool) for g, v in zbar.items()}
        best = (target, {g: k.copy() for g, k in keep.items()})
        for _, g, i in order:
            if keep[g].sum() <= plan.least(g):
                continue                            # a group keeps its floor
            keep[g][i] = False
            error = abs(1.0 - plan.binary_params(keep) / plan.dense_params - target)
            if error < best[0]:
                best = (error, {h: k.copy() for h, k in keep.items()})
            elif error > best[0] + 0.05:
                break                               # past the target
        return best[1]

    def removed_share(self, model, keep: dict[int, np.ndarray] | None = None) -> float:
        """Share of the dense binary parameters removed by ``keep`` (default
        :meth:`hard_keep` now)."""
        keep = self.hard_keep(model) if keep is None else keep
        return 1.0 - self.plan.binary_params(keep) / self.plan.dense_params

    def decided(self, model) -> bool:
        return all(float(np.min(model.get_layer(n).kernel_quantizer.decision)) >= 0
                   for n in self.plan.weight_layers)

    def decide(self, model) -> dict[int, np.ndarray]:
        """Fix every channel as binary or zero: thresholds, masks (the channel graph).

        Channels go in order of their producers' mean zero fraction (highest first)
        while that brings the removed share of binary parameters nearer ``ratio``: the
        controller's last action, which takes up what the feedback left (channels
        near a zero fraction of 0.5 are the ones it moves).
        """
        plan = self.plan
        keep = self.closest_keep(model)
        plan.graph.apply_masks(model, keep)
        for name in plan.weight_layers:
            layer = model.get_layer(name)
            layer.kernel_quantizer.decide(plan.graph.layout_mask(plan.graph.outputs[name], keep))
        for name in plan.activation_layers:
            layer = model.get_layer(name)
            layer.input_quantizer.decide(plan.graph.layout_mask(plan.graph.inputs[name], keep))
        self.pressure.assign(0.0)
        self.polarize.assign(0.0)
        return keep

    # ------------------------------------------------------------ finalize
    def finalize(self, model: tf.keras.Model) -> Result:
        if self.plan is None:
            raise ModelError("etb: finalize needs the model returned by method.prepare")
        notes = []
        if not self.decided(model):
            self.decide(model)
            notes.append("etb: channels were decided at the end of training (no settle "
                         "steps ran): the pruned model is not the trained model")
        binary = to_binary(model)
        small = shrink(binary)
        keep = self.plan.graph.keep_from_masks(binary)
        kept_params = self.plan.binary_params(keep)
        reduction = 1.0 - kept_params / self.plan.dense_params
        c = self.controller
        metrics = {"target_ratio": self.params.ratio, "binary_params_dense": self.plan.dense_params,
                   "binary_params": kept_params, "binary_params_reduction": reduction,
                   "controller_error_points": 100 * (reduction - self.params.ratio)}
        tables, figures = {}, {}
        if c is not None:
            metrics.update(c.summary())
            figures = c.figures()
        tables["kept filters"] = {
            name: {"filters": int(binary.get_layer(name).filters),
                   "kept": int(small.get_layer(name).filters)}
            for name in self.plan.weight_layers}
        return Result(small, binary, metrics, tables, figures, notes)


class EvolutionController(tf.keras.callbacks.Callback):
    """ETB inside ``fit``: ramps the polarising term, steers the sparsity pressure to the
    target ratio, decides the channels for the settle steps, logs zero-fraction histograms.

    ``self.trace`` lists ``(step, setpoint, measured ratio, pressure)`` per control step;
    ``self.histograms`` the per-epoch histogram of filter zero fractions
    (:data:`HISTOGRAM_BINS` bins over [0, 1]); with ``log_dir`` both go to TensorBoard.
    """

    def __init__(self, method: ETB):
        super().__init__()
        self.method = method
        self.trace: list[tuple[int, float, float, float]] = []
        self.histograms: list[list[int]] = []
        self.decision_step: int | None = None
        self.polarized_at_decision: float | None = None
        self.feedback_ratio: float | None = None     # removed share by the 0.5 cut, at decision
        self._writer = None

    def on_train_begin(self, logs=None):
        p = self.method.params
        steps = self.params.get("steps") or 1
        self._total = self.params["epochs"] * steps
        self._decide_at = max(1, int(round((1.0 - p.settle) * self._total)))
        self._ramp = max(1, int(round(p.ramp * self._decide_at)))
        if p.log_dir:
            self._writer = tf.summary.create_file_writer(os.fspath(p.log_dir))

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def setpoint(self, step: int) -> float:
        done = min(1.0, step / self._ramp)
        return self.method.params.ratio * (1.0 - (1.0 - done) ** 3)

    def on_train_batch_begin(self, batch, logs=None):
        if self.decision_step is None and self._step() >= self._decide_at:
            z = np.concatenate(list(self.method.zero_fractions(self.model).values()))
            self.polarized_at_decision = float(np.mean((z == 0) | (z == 1)))
            self.feedback_ratio = self.method.removed_share(self.model)
            self.method.decide(self.model)
            self.decision_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        if self.decision_step is not None:
            return
        p, step = self.method.params, self._step()
        self.method.polarize.assign(p.polarization * min(1.0, step / self._decide_at))
        if step % p.control_every == 0:
            keep = self.method.hard_keep(self.model)
            self.method.close_groups_at_floor(keep)
            target, measured = self.setpoint(step), self.method.removed_share(self.model, keep)
            pressure = float(self.method.pressure.numpy()) + p.gain * (target - measured)
            self.method.pressure.assign(pressure)
            self.trace.append((step, target, measured, pressure))

    def on_epoch_end(self, epoch, logs=None):
        z = np.concatenate(list(self.method.zero_fractions(self.model).values()))
        z = np.clip(z, 0.0, 1.0)
        counts, _ = np.histogram(z, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        self.histograms.append(counts.tolist())
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                tf.summary.histogram("etb/filter_zero_fraction", z, buckets=HISTOGRAM_BINS)
                tf.summary.scalar("etb/removed_share", self.method.removed_share(self.model))
                tf.summary.scalar("etb/pressure", float(self.method.pressure.numpy()))
            self._writer.flush()

    def summary(self) -> dict:
        return {"decision_step": self.decision_step, "total_steps": self._total,
                "polarized_at_decision": self.polarized_at_decision,
                "feedback_ratio_at_decision": self.feedback_ratio,
                "zero_fraction_histograms": self.histograms,
                "controller": [list(t) for t in self.trace]}

    def figures(self) -> dict[str, Figure]:
        centers = [round((i + 0.5) / HISTOGRAM_BINS, 2) for i in range(HISTOGRAM_BINS)]
        figures = {"etb_zero_fraction": Figure(
            "ETB: filter zero fraction per epoch", "bar",
            {f"epoch {e + 1}": {"x": centers, "series": {"filters": h}}
             for e, h in enumerate(self.histograms)},
            xlabel="share of zero weights in the filter", ylabel="filters")}
        if self.trace:
            steps, setpoints, measured, _ = zip(*self.trace)
            figures["etb_controller"] = Figure(
                "ETB: binary parameters removed", "line",
                {"controller": {"x": list(steps), "series": {"setpoint": list(setpoints),
                                                             "measured": list(measured)}}},
                xlabel="training step", ylabel="share removed",
                hlines={"target": self.method.params.ratio})
        return figures
