"""bnnprune-tf: prune binary neural networks the way BNNs need to be pruned.

Importing this package makes ``tf.keras`` Keras 2 (see :mod:`bnnprune_tf.tf_setup`),
so import it before tensorflow.

Example::

    import bnnprune_tf
    from bnnprune_tf import data, models, profile

    ds = data.load("mnist5k")
    model = models.build("mnist_bnn", input_shape=ds.input_shape)
    print(profile.profile(model).to_markdown())
"""

from bnnprune_tf import tf_setup as _tf_setup

_tf_setup.configure()

from bnnprune_tf import masks as _masks  # noqa: E402,F401  (registers masked layers for load_model)
from bnnprune_tf import bitslice as _bitslice  # noqa: E402,F401  (registers BitSlice for load_model)

__version__ = "0.1.0"
