"""The method interface: what every pruning method declares, in one place.

A method is a class with one parameter schema (:class:`Params`, a pydantic
model used by the Python API and by the recipe alike) and five hooks, each
with a default, split the way tfmot splits schedule / wrapper / callback:

- :meth:`Method.check` -- cross-field checks against the model it will prune
  (layer names exist and are prunable...), run before any training;
- :meth:`Method.prepare` -- a *new* model ready to train: masks (and, for
  methods that own them, swapped quantizers or an input transform), with the
  method's :meth:`Method.loss` term attached by ``model.add_loss`` so that a
  user's own ``compile`` + ``fit`` picks it up;
- :meth:`Method.callbacks` -- the Keras callbacks to pass to ``model.fit``;
- :meth:`Method.finalize` -- learned state -> masks -> shrunk model, as a
  :class:`Result` that also carries what the method reports, as data;
- :meth:`Method.run` -- the whole method on a :class:`~bnnprune_tf.data.Dataset`
  (what the recipe stage and the one-call helpers use): by default
  prepare, one :func:`~bnnprune_tf.training.train` of ``params.epochs``, finalize.

Example (a user's own training code)::

    from bnnprune_tf import methods

    method = methods.get("l1")(ratio=0.5, round_to=8)
    masked = method.prepare(model)                # a copy; ``model`` is untouched
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(x_train, y_train, epochs=2, callbacks=method.callbacks())
    result = method.finalize(masked)
    result.model                                  # shrunk: channels really removed
    result.metrics, result.tables, result.figures # the method's report, as data
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping

import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bnnprune_tf import masks, training
from bnnprune_tf.models import copy_model
from bnnprune_tf.errors import ModelError
from bnnprune_tf.reporting import Figure

RoundTo = Annotated[int, Field(ge=1)] | Literal["lce"] | None   # a channel multiple


class Params(BaseModel):
    """Base of every method's parameter schema: unknown keys are errors.

    ``epochs`` and ``learning_rate`` are what the default :meth:`Method.run`
    trains the prepared model for (fine-tuning, or training from scratch).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-3, gt=0)


@dataclass
class Result:
    """What a method produced: the models and its report as data.

    ``model`` is the deliverable (shrunk; weight masks inside kept filters
    stay, as ternary weights); ``masked`` the trained masked model it comes
    from. ``metrics`` is JSON-ready; ``metrics["epochs_trained"]`` (set by :meth:`Method.run`)
    is how many epochs the deliverable trained inside ``run`` (what an equal-epochs
    comparison gives its control); ``tables`` maps a title to rows
    (``{row name: {column: value}}``); ``figures`` maps a file stem to a
    :class:`Figure`.
    """

    model: tf.keras.Model
    masked: tf.keras.Model
    metrics: dict = field(default_factory=dict)
    tables: dict[str, dict[str, dict]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What :meth:`Method.run` trains with besides the method's own parameters.

    ``epochs`` / ``learning_rate`` / ``optimizer`` / ``schedule`` are those of
    the full training (a method that retrains from scratch uses them).

    Example::

        context = Context(ds, batch_size=64, seed=0)
        result = methods.get("latent")(granularity="channel", budget=0.6).run(model, context)
    """

    dataset: Any
    batch_size: int = 64
    augment: tuple[str, ...] = ()
    seed: int = 0
    epochs: int = 10
    learning_rate: float = 1e-2
    optimizer: str = "adam"
    schedule: str = "cosine"
    work_dir: Path | None = None
    log: Callable[[str], None] = print

    def train(self, model, epochs: int, learning_rate: float, callbacks=(), seed: int | None = None,
              work_dir: Path | None = None) -> list[dict]:
        """:func:`bnnprune_tf.training.train` with this context's data and settings."""
        return training.train(model, self.dataset, epochs, learning_rate,
                              optimizer=self.optimizer, schedule=self.schedule,
                              batch_size=self.batch_size, augment=self.augment,
                              seed=self.seed if seed is None else seed,
                              work_dir=work_dir, callbacks=callbacks)


class Method:
    """Base class of pruning methods (see the module docstring)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | Mapping | None = None, **kwargs):
        given = params.model_dump(exclude_unset=True) if isinstance(params, BaseModel) else \
            dict(params or {})
        try:
            self.params = self.Params.model_validate({**given, **kwargs})
        except ValidationError as e:
            raise ModelError(f"invalid parameters for method {self.name!r}: " + "; ".join(
                f"{'.'.join(map(str, err['loc'])) or '<params>'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in e.errors())) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # ------------------------------------------------------------ hooks
    def check(self, model: tf.keras.Model) -> None:
        """Raise a clear error if the parameters do not fit ``model`` (before training)."""
        check_layer_names(model, self.params)

    def prepare(self, model: tf.keras.Model, validation_data=None,
                calibration_data=None) -> tf.keras.Model:
        """A new, masked copy of ``model`` with the method's loss term attached.

        ``validation_data`` ``(x, y)`` is for methods that analyse the model
        before training (e.g. a sensitivity scan), ``calibration_data`` (training
        images) for methods that re-estimate statistics; others ignore them.
        """
        self.check(model)
        prepared = copy_masked(model)
        term = self.loss(prepared)
        if term is not None:
            prepared.add_loss(term)
        return prepared

    def callbacks(self) -> list[tf.keras.callbacks.Callback]:
        """Keras callbacks that measure and prune inside ``model.fit``."""
        return []

    def loss(self, model: tf.keras.Model) -> Callable[[], tf.Tensor] | None:
        """An optional training-loss term: a zero-argument callable (see ``Model.add_loss``)."""
        return None

    def finalize(self, model: tf.keras.Model) -> Result:
        """The trained masked ``model`` -> :class:`Result` (shrunk deliverable and report)."""
        from bnnprune_tf.prune import strip_pruning

        return Result(strip_pruning(model, keep_weight_masks=True), model)

    def run(self, model: tf.keras.Model, context: Context) -> Result:
        """The whole method on ``context.dataset``; ``model`` is not changed."""
        return self.train_and_finalize(self.prepare(model, context.dataset.arrays("val")),
                                       context)

    def train_and_finalize(self, prepared: tf.keras.Model, context: Context) -> Result:
        """Train a prepared model for ``params.epochs`` with the callbacks, then finalize."""
        history = []
        if self.params.epochs:
            history = context.train(prepared, self.params.epochs, self.params.learning_rate,
                                    self.callbacks(), work_dir=context.work_dir)
        else:
            run_callbacks_without_training(prepared, self.callbacks())
        result = self.finalize(prepared)
        result.metrics.setdefault("history", history)
        result.metrics.setdefault("epochs_trained", self.params.epochs)
        return result


def copy_masked(model: tf.keras.Model) -> tf.keras.Model:
    """A masked copy of ``model`` (masks kept if it has them); ``model`` is not changed."""
    masked = masks.prunable(model)
    return copy_model(model) if masked is model else masked


def run_callbacks_without_training(model: tf.keras.Model, callbacks) -> None:
    """Give callbacks that act at train begin/end their chance when there are 0 epochs."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_train_end()


def check_layer_names(model: tf.keras.Model, params: BaseModel) -> None:
    """Every layer named by ``params`` (fields ``ratios``, ``widths``, ``layers``) exists and
    is prunable in ``model``: its channels, or at ``level: weight`` its kernel entries (the
    classifier's too)."""
    from bnnprune_tf.graph import ChannelGraph
    from bnnprune_tf.layer_facts import DEPTHWISE, PRODUCERS

    named = {f: list(getattr(params, f) or ()) for f in ("ratios", "widths", "layers")
             if getattr(params, f, None)}
    if not named:
        return
    existing = {layer.name for layer in model.layers}
    if getattr(params, "level", "channel") == "weight":
        prunable = {l.name for l in model.layers if isinstance(l, PRODUCERS + DEPTHWISE)}
    else:
        graph = ChannelGraph(model)
        prunable = {name for group in graph.prunable_groups() for name in group.producers}
    for field_name, names in named.items():
        for name in names:
            if name not in existing:
                raise ModelError(f"{field_name}: no layer {name!r} in model {model.name!r}; "
                                 f"prunable layers: {', '.join(sorted(prunable))}")
            if name not in prunable:
                raise ModelError(f"{field_name}: layer {name!r} cannot be pruned (its channels "
                                 "are fixed, e.g. the classifier or a network output); "
                                 f"prunable layers: {', '.join(sorted(prunable))}")

