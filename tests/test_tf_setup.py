import os
import subprocess
import sys

import tensorflow as tf
from tensorflow.python.autograph.core import config as autograph_config


def test_tf_keras_is_keras2():
    assert tf.keras.layers.Layer.__module__.startswith("tf_keras")
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


def test_autograph_skips_tf_keras():
    first = autograph_config.CONVERSION_RULES[0]
    assert isinstance(first, autograph_config.DoNotConvert)
    assert first.matches("tf_keras.src.engine.training")


def test_keras3_already_imported_is_a_clear_import_error():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0")
    proc = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; tf.keras.layers; import bnnprune_tf"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ImportError: bnnprune_tf needs tf.keras to be Keras 2" in proc.stderr
    assert "TF_USE_LEGACY_KERAS=1" in proc.stderr
