"""Pruning methods behind one interface, and their registry.

Every method is a :class:`~bnnprune_tf.methods.base.Method` registered by
name with :func:`register`; ``names()`` lists them and ``get(name)`` returns
the class. The interface, with a complete example method, is in
``bnnprune_tf/methods/README.md``.

- ``l1``, ``random``: baseline criteria (:mod:`~bnnprune_tf.methods.score_pruning`);
- ``wff``: weight flipping frequency (Li & Ren, ISQED 2020; :mod:`~bnnprune_tf.methods.flip_frequency`);
- ``latent``: latent-weight magnitude with layer sensitivity (ASPDAC 2023;
  :mod:`~bnnprune_tf.methods.latent_weight`).

Example::

    from bnnprune_tf import methods

    print(methods.names())                       # ['l1', 'latent', 'random', 'wff']
    method = methods.get("wff")(interval=2, round_to=8)
    masked = method.prepare(model)
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(x, y, epochs=4, callbacks=method.callbacks())
    small = method.finalize(masked).model
"""

from __future__ import annotations

from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods.base import Context, Figure, Method, Params, Result

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator: make a :class:`Method` available as ``methods.get(name)``.

    Example::

        @methods.register("toy")
        class Toy(methods.ScorePruning): ...
    """

    def wrap(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ModelError(f"@register({name!r}) decorates a subclass of methods.Method, "
                             f"not {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ModelError(f"a method named {name!r} is registered already "
                             f"({_REGISTRY[name].__module__}); choose another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown pruning method {name!r}: use one of {', '.join(names())}")
    return _REGISTRY[name]


from bnnprune_tf.methods.score_pruning import ScoreParams, ScorePruning  # noqa: E402
from bnnprune_tf.methods import flip_frequency, latent_weight, score_pruning  # noqa: E402,F401

__all__ = ["Context", "Figure", "Method", "Params", "Result", "ScoreParams", "ScorePruning",
           "get", "names", "register"]
