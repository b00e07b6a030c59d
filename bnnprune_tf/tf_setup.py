"""Makes TensorFlow behave the way bnnprune-tf needs, once, before anything else.

Two things happen when ``bnnprune_tf`` is imported:

1. ``tf.keras`` must be Keras 2 (the ``tf_keras`` package), because Larq, Larq
   Compute Engine and tfmot are written against it. TensorFlow decides which
   Keras sits behind ``tf.keras`` when it is first imported, from the
   environment variable ``TF_USE_LEGACY_KERAS``; we set it to ``1`` if
   TensorFlow is not imported yet, and refuse to run if it was already
   imported with Keras 3 behind ``tf.keras``.
2. AutoGraph is told not to convert ``tf_keras``'s own code. Under TF 2.16 it
   otherwise converts the whole training loop of tf_keras on the first
   ``fit()`` of a process, which costs ~20 s and changes nothing (see
   ``../shared/reference/data.md``: 25.5 s -> 3.2 s for a first mnist5k epoch).

Example::

    import bnnprune_tf            # calls configure() on import
    import tensorflow as tf
    assert tf.keras.layers.Layer.__module__.startswith("tf_keras")
"""

import os
import sys

KERAS3_MESSAGE = (
    "bnnprune_tf needs tf.keras to be Keras 2 (the tf-keras package), but "
    "tensorflow was already imported with Keras 3 behind tf.keras. "
    "Fix: import bnnprune_tf (or larq) before tensorflow, or set the "
    "environment variable TF_USE_LEGACY_KERAS=1 before starting Python, "
    "e.g. `TF_USE_LEGACY_KERAS=1 python train.py`."
)


def _keras_is_legacy(tf_module) -> bool:
    return tf_module.keras.layers.Layer.__module__.startswith("tf_keras")


def configure() -> None:
    """Select Keras 2 behind ``tf.keras`` and skip AutoGraph for tf_keras.

    Raises:
        ImportError: tensorflow was imported before with Keras 3 behind tf.keras.
    """
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _keras_is_legacy(tf):
        raise ImportError(KERAS3_MESSAGE)

    from tensorflow.python.autograph.core import config as autograph_config

    rule = autograph_config.DoNotConvert("tf_keras")
    if not any(
        isinstance(r, autograph_config.DoNotConvert) and r._prefix == "tf_keras"
        for r in autograph_config.CONVERSION_RULES
    ):
        autograph_config.CONVERSION_RULES = (rule,) + tuple(
            autograph_config.CONVERSION_RULES
        )
