"""Converters: Larq models to LCE flatbuffers (``lce``, ``lint``, ``flatbuffer``), their
latency (``bench``, ``benchmark_log``), and the microcontroller exports.

Importing this package imports :mod:`bnnprune_tf` first, so that ``tf.keras`` is Keras 2
even when a converter module (e.g. one importing larq_compute_engine) is imported first.

Example::

    from converters import flatbuffer
    graph = flatbuffer.read(open("model.tflite", "rb").read())
"""

import bnnprune_tf  # noqa: F401  (selects Keras 2 before tensorflow loads)
