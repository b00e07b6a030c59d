"""Run by tests/test_distribute.py in a subprocess (TensorFlow's devices are fixed once per
process): every method's state after a short training + pruning, on one device and under
``MirroredStrategy`` over 2 logical CPUs, with the same global batch and seed.

``python tests/distributed_methods.py wff l1`` prints one JSON line
``{method: {"single": state, "mirrored": state}}``.
"""

import json
import sys
import time

import bnnprune_tf  # noqa: F401  (Keras 2)
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from bnnprune_tf import data, distribute, masks, methods, models, prune, training  # noqa: E402
from method_params import PARAMS  # noqa: E402

EPOCHS = 2
LIMIT = 64          # 64 training images: 2 steps of 32 per epoch


def state(name: str, strategy) -> dict:
    """Masks, widths and the method's own state after prepare, fit, finalize."""
    ds = data.load("mnist5k", seed=0, limit=LIMIT)
    with strategy.scope():
        model = models.build("mnist_bnn", ds.input_shape, ds.num_classes, 0.25, seed=0)
        # both runs with global-batch BatchNorm (non-fused): only the strategy differs
        model = distribute.synchronize_batch_norm(model)
        method = methods.get(name)(PARAMS[name])
        masked = method.prepare(model, ds.arrays("val"), ds.arrays("train"))
        view = ds.pixels() if name == "cbnn" else ds
        # SGD: replicas sum gradients in another order (float rounding); Adam would turn
        # a rounding difference of a ~0 gradient into a whole step
        training.train(masked, view, EPOCHS, 0.1, optimizer="sgd", batch_size=32, seed=0,
                       callbacks=method.callbacks())
        result = method.finalize(masked)
    out = {"widths": prune.kept_widths(result.model),
           "masks": {l.name: np.asarray(l.full_mask()).astype(int).sum(axis=tuple(
               range(np.asarray(l.full_mask()).ndim - 1))).tolist()
               for l in masked.layers if masks.is_masked(l)}}
    if name == "wff":
        out["flips"] = {n: c.tolist() for n, c in method._pruner.counter.counts_numpy().items()}
        out["samples"] = int(method._pruner.counter.samples.numpy())
    if name == "sbnn":
        out["log"] = method.log.rows
    if name == "etb":
        out["pressure"] = float(method.pressure.numpy())
    if name == "latent":
        out["ratios"] = method.ratios
    return out


def main(names):
    mirrored = distribute.strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    results = {}
    for n in names:
        started = time.time()
        results[n] = {"single": state(n, tf.distribute.get_strategy()),
                      "mirrored": state(n, mirrored), "seconds": round(time.time() - started, 1)}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:] or list(PARAMS))
