"""Pruning methods behind one interface, and their registry.

Every method is a :class:`~bnnprune_tf.methods.base.Method` registered by
name with :func:`register`; ``names()`` lists them and ``get(name)`` returns
the class (:mod:`~bnnprune_tf.methods.registry`). The interface, with a complete example method, is in
``bnnprune_tf/methods/README.md``.

- ``l1``, ``random``: baseline criteria (:mod:`~bnnprune_tf.methods.score_pruning`);
- ``wff``: weight flipping frequency (Li & Ren, ISQED 2020; :mod:`~bnnprune_tf.methods.flip_frequency`);
- ``latent``: latent-weight magnitude with layer sensitivity (ASPDAC 2023;
  :mod:`~bnnprune_tf.methods.latent_weight`);
- ``sbnn``: {alpha, beta} weights with an expected-connections target (ECML PKDD 2023;
  :mod:`~bnnprune_tf.methods.sbnn`);
- ``etb``: evolution from ternary to binary with a pruning-ratio controller (J. Jilin
  Univ. 2024; a reconstruction, :mod:`~bnnprune_tf.methods.ternary_to_binary`);
- ``cbnn``: input bit-slice pruning + width shrinking + retraining, binary from the first
  layer (Neurocomputing 2020; :mod:`~bnnprune_tf.methods.cbnn`).

Example::

    from bnnprune_tf import methods

    print(methods.names())       # ['cbnn', 'etb', 'l1', 'latent', 'random', 'sbnn', 'wff']
    method = methods.get("wff")(interval=2, round_to=8)
    masked = method.prepare(model)
    masked.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    masked.fit(x, y, epochs=4, callbacks=method.callbacks())
    small = method.finalize(masked).model
"""

from __future__ import annotations

from bnnprune_tf.methods import (cbnn, flip_frequency, latent_weight, sbnn,  # noqa: F401
                                 score_pruning, ternary_to_binary)
from bnnprune_tf.methods.base import Context, Method, Params, Result
from bnnprune_tf.methods.registry import get, names, register
from bnnprune_tf.methods.score_pruning import ScoreParams, ScorePruning
from bnnprune_tf.reporting import Figure

__all__ = ["Context", "Figure", "Method", "Params", "Result", "ScoreParams", "ScorePruning",
           "get", "names", "register"]
