"""The registry of pruning methods: :func:`register` (a class decorator), :func:`names`,
:func:`get`. Method modules import this module, never the package.

Example::

    from bnnprune_tf.methods.registry import register
    from bnnprune_tf.methods.score_pruning import ScorePruning

    @register("toy")
    class Toy(ScorePruning):
        def filter_scores(self, layer): ...
"""

from __future__ import annotations

from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods.base import Method

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
