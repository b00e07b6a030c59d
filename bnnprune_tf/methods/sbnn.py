"""SBNN: binary domain generalization with an expected-connections target (Schiavone,
Galati, Zuluaga, ECML PKDD 2023; ``../shared/reference/methods.md`` section 4).

The binary convs move to the domain ``{phi - tau, phi + tau}`` (:mod:`bnnprune_tf.sbnn`);
a penalty drives ``p_hat``, the share of *connections* (weights mapped to ``beta``) over
all of them, down to the target ``EC`` (section 4.2, the official code)::

    h      = ReLU(p_hat - EC)
    lambda = gamma * L_task / (h * (1 - gamma))   if h > 1e-4 else 0   (held constant)
    L      = L_task + lambda * h                  (its value: gamma / (1 - gamma) * L_task)

``p_hat``'s gradient is straight-through (0.5 per latent weight), so while ``p_hat > EC``
every latent weight is pushed down alike; latent weights are clipped to [-1.5, 1.5] after
every step (the layers' kernel constraint). Nothing is removed: the deliverable keeps
its shape, and ``converters.sbnn`` deploys the sparse form (work and weight bytes
following the connections).

The penalty needs the batch's task loss, so :meth:`SBNN.prepare` returns an
:class:`ExpectedConnectionsModel`: the same functional model with a ``train_step`` that
adds it. A user's own ``compile`` + ``fit`` therefore trains with it, and ``fit`` logs
``p_hat``, ``ec``, ``sbnn_lambda`` and ``sbnn_penalty`` per step (to a TensorBoard
callback too); :meth:`SBNN.callbacks` records them per epoch for the report.

Example::

    from bnnprune_tf import methods
    method = methods.get("sbnn")(ec=0.05)                 # gamma 0.07: the paper's table
    sparse = method.prepare(model)                        # a copy, binary convs in the domain
    sparse.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    sparse.fit(x, y, epochs=10, callbacks=method.callbacks()
               + [tf.keras.callbacks.TensorBoard("logs")])   # p_hat, lambda in TensorBoard
    result = method.finalize(sparse)
    result.metrics["p_hat"], result.tables["connections per layer"]
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf
from pydantic import Field, field_validator, model_validator

from bnnprune_tf import sbnn
from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods.base import Method, Params, Result
from bnnprune_tf.methods.registry import register
from bnnprune_tf.models import copy_model
from bnnprune_tf.reporting import Figure

#: (EC, gamma) pairs of the official code's CIFAR-10 ResNet-18 runs (methods.md section 4.3)
GAMMA_TABLE = {0.50: 0.00, 0.25: 0.02, 0.10: 0.04, 0.05: 0.07, 0.04: 0.07, 0.03: 0.08,
               0.02: 0.08, 0.01: 0.10}
FLOOR = 1e-4   # h at or below this gives lambda = 0 (CIFAR code)


def penalty(task_loss, p_hat, ec: float, gamma: float) -> tuple[tf.Tensor, tf.Tensor]:
    """``(lambda * h, lambda)`` of the expected-connections objective (module docstring).

    ``lambda`` is a constant for the gradient (stop-gradient on ``L_task`` and ``h``), so
    the penalty's gradient is ``lambda * d p_hat``; with ``h <= 1e-4`` both are exactly 0.

    Example::

        term, lam = penalty(tf.constant(2.0), tf.constant(0.3), ec=0.1, gamma=0.04)
        float(term)   # 0.04 / 0.96 * 2.0
    """
    h = tf.nn.relu(p_hat - ec)
    active = tf.stop_gradient(h) > FLOOR
    safe = tf.where(active, tf.stop_gradient(h), 1.0)
    lam = tf.where(active, gamma * tf.stop_gradient(task_loss) / (safe * (1.0 - gamma)), 0.0)
    return lam * h, lam


class ExpectedConnectionsModel(tf.keras.Model):
    """A functional model whose ``train_step`` adds the expected-connections penalty.

    Build it from a model with :class:`~bnnprune_tf.sbnn.SBNNConv2D` layers
    (:meth:`SBNN.prepare` does); ``ec`` and ``gamma`` as in :func:`penalty`.
    """

    def __init__(self, *args, ec: float = 0.5, gamma: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ec, self.gamma = float(ec), float(gamma)

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        layers = sbnn.sbnn_layers(self)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            task = self.compute_loss(x, y, y_pred, sample_weight)
            p_hat = sbnn.expected_connections(layers)
            # lambda from the global batch's loss (each replica's is its share of it); the
            # replicas' gradients are summed, so each adds 1/replicas of the penalty
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync if context is not None else 1
            whole = tf.stop_gradient(task)
            if replicas > 1:
                whole = context.all_reduce(tf.distribute.ReduceOp.SUM, whole)
            term, lam = penalty(whole, p_hat, self.ec, self.gamma)
            total = task + term / replicas
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        # Keras sums these logs over the replicas: each gives its share
        return {**logs, "p_hat": p_hat / replicas, "ec": tf.constant(self.ec) / replicas,
                "sbnn_lambda": lam / replicas, "sbnn_penalty": term / replicas}


class ConnectionsLog(tf.keras.callbacks.Callback):
    """Records, after each epoch, the counted ``p_hat`` and the last step's ``lambda`` and
    penalty (``self.rows``: one dict per epoch)."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        layers = sbnn.sbnn_layers(self.model)
        self.rows.append({"epoch": epoch + 1, "p_hat": counted_share(layers),
                          "lambda": float(logs.get("sbnn_lambda", 0.0)),
                          "penalty": float(logs.get("sbnn_penalty", 0.0)),
                          "loss": float(logs.get("loss", float("nan")))})


def counted_share(layers) -> float:
    """The share of connections (latent ``w >= 0``) over ``layers``, counted in numpy."""
    ones = sum(int(sbnn.connections(layer).sum()) for layer in layers)
    return ones / sum(sbnn.connections(layer).size for layer in layers)


class SBNNParams(Params):
    """``ec``: target share of connections in (0, 0.5] (0.5 = the dense BNN); ``gamma`` in
    [0, 1), default the paper's value for ``ec`` (:data:`GAMMA_TABLE`); ``start``: ``plain``
    (tau 1, phi 0, the reference) or ``closed_form`` (least squares on the given model's
    latent weights at ``ec`` connections: a trained BNN's, or a fresh model's initial ones,
    so that ``p_hat`` starts at ``ec``; :func:`bnnprune_tf.sbnn.to_sbnn`);
    ``layers``: the binary convs to convert (default all but the
    classifier); ``log_dir``: also log to TensorBoard there."""

    ec: float = Field(0.05, gt=0, le=0.5)
    gamma: float | None = Field(None, ge=0, lt=1)
    start: Literal["plain", "closed_form"] = "plain"
    layers: list[str] | None = None
    clip_value: float = Field(sbnn.CLIP, gt=0)
    log_dir: str | None = None

    @field_validator("ec")
    @classmethod
    def _ec(cls, value):
        return float(value)

    @model_validator(mode="after")
    def _gamma(self):
        if self.gamma is None:
            if round(self.ec, 6) not in GAMMA_TABLE:
                raise ValueError(
                    f"no gamma for ec={self.ec} in the paper's table (ec in "
                    f"{', '.join(map(str, sorted(GAMMA_TABLE)))}): give gamma= in [0, 1)")
            self.gamma = GAMMA_TABLE[round(self.ec, 6)]
        return self


@register("sbnn")
class SBNN(Method):
    """SBNN (ECML PKDD 2023): {alpha, beta} weights, connections driven down to ``ec``."""

    Params = SBNNParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.log = ConnectionsLog()

    def check(self, model: tf.keras.Model) -> None:
        if sbnn.sbnn_layers(model):
            return
        allowed = sbnn.convertible_layers(model)
        if not allowed:
            raise ModelError(f"model {model.name!r} has no binary conv (a QuantConv2D with "
                             "sign input and sign kernel, other than the classifier): SBNN "
                             "counts connections over binary convs only")
        missing = [n for n in self.params.layers or () if n not in allowed]
        if missing:
            raise ModelError(f"layers: {', '.join(map(repr, missing))} are not binary convs of "
                             f"model {model.name!r}; binary convs: {', '.join(allowed)}")

    def prepare(self, model, validation_data=None, calibration_data=None):
        """A copy of ``model`` with its binary convs in the domain, as an
        :class:`ExpectedConnectionsModel` (``model`` is untouched)."""
        self.check(model)
        p = self.params
        inner = copy_model(model) if sbnn.sbnn_layers(model) else sbnn.to_sbnn(
            model, p.layers, p.clip_value, p.start, p.ec)
        return ExpectedConnectionsModel(inner.inputs, inner.outputs, ec=p.ec, gamma=p.gamma,
                                        name=model.name)

    def callbacks(self):
        extra = [tf.keras.callbacks.TensorBoard(self.params.log_dir)] if self.params.log_dir \
            else []
        return [self.log, *extra]

    def finalize(self, model: tf.keras.Model) -> Result:
        """The trained model as a plain functional copy (same shape: nothing is removed)
        and the report: ``p_hat`` reached, connections and {alpha, beta} per layer."""
        plain = copy_model(tf.keras.Model(model.inputs, model.outputs, name=model.name))
        layers = sbnn.sbnn_layers(plain)
        per_layer = {}
        for layer in layers:
            b = sbnn.connections(layer)
            filters = b.reshape(-1, b.shape[-1])
            alpha, beta = layer.alpha_beta()
            per_layer[layer.name] = {"weights": int(b.size), "connections": int(b.sum()),
                                     "share": float(b.mean()), "alpha": alpha, "beta": beta,
                                     "filters": int(filters.shape[1]),
                                     "filters without connections":
                                         int((filters.sum(axis=0) == 0).sum())}
        p_hat = counted_share(layers)
        result = Result(plain, model, metrics={
            "p_hat": p_hat, "ec": self.params.ec, "gamma": self.params.gamma,
            "reached": p_hat <= self.params.ec + 0.01, "layers": per_layer,
            "epochs": self.log.rows})
        result.tables["connections per layer"] = per_layer
        if self.log.rows:
            result.tables["p_hat per epoch"] = {str(r["epoch"]): {
                k: v for k, v in r.items() if k != "epoch"} for r in self.log.rows}
            result.figures["sbnn_p_hat"] = Figure(
                "expected connections", "line",
                {"p_hat": {"x": [r["epoch"] for r in self.log.rows],
                           "series": {"p_hat": [r["p_hat"] for r in self.log.rows]}}},
                xlabel="epoch", ylabel="share of connections", hlines={"EC": self.params.ec})
        result.notes.append(
            f"SBNN: p_hat {p_hat:.4f} of connections for EC {self.params.ec} (gamma "
            f"{self.params.gamma}); the model keeps its shape: deploy it sparse with "
            "converters.sbnn (C runtime) or converters.lce (exact, dense)")
        return result
