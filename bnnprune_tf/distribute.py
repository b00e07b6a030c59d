"""Train and prune on several devices (``mirrored``) or machines (``multi_worker``).

The engine is ``tf.distribute``; this module picks and checks the strategy and
holds the few rules that make a distributed run compute what a single-device
run computes:

- :func:`strategy` builds ``none`` (the default strategy), ``mirrored``
  (``MirroredStrategy`` over the local devices) or ``multi_worker``
  (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, checked first: a missing
  or bad ``TF_CONFIG`` or a worker that never answers is a clear
  :class:`~bnnprune_tf.errors.DistributeError` within ``timeout`` seconds,
  never a hang). Models, optimizers, masks, method state and metrics created
  under ``strategy.scope()`` are mirrored; Keras splits each global batch (the
  recipe's ``batch_size``) over the replicas.
- :func:`synchronize_batch_norm`: a copy whose BatchNormalization layers use the
  statistics of the global batch (``synchronized=True``), as one device would;
  per-replica statistics would train a different network.
- :func:`is_chief`: only the chief writes files (models, reports, manifests);
  the other workers run the same steps (every collective needs all of them).
- :func:`agree`: one integer every worker agrees on (the chief's).

Example (a user's own script; with a recipe: ``distribute: {strategy: mirrored}``)::

    from bnnprune_tf import distribute, methods, models, training

    strategy = distribute.strategy("mirrored")
    with strategy.scope():
        model = distribute.synchronize_batch_norm(models.build("mnist_bnn", (28, 28, 1)))
        method = methods.get("wff")(interval=2)
        masked = method.prepare(model)
        training.train(masked, ds, epochs=4, batch_size=64, callbacks=method.callbacks())
        result = method.finalize(masked)
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from bnnprune_tf.errors import DistributeError  # noqa: F401  (distribute.DistributeError)

STRATEGIES = ("none", "mirrored", "multi_worker")
TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


def strategy(name: str = "none", timeout: float = 120.0) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``name`` (one of :data:`STRATEGIES`).

    Args:
        timeout: ``multi_worker`` only: seconds to wait for every worker at the
            start, and the longest a collective (one gradient all-reduce) may
            take before the run stops with an error; a worker that dies mid-run
            is noticed by TensorFlow's health check within ~20 s.
    """
    if name not in STRATEGIES:
        raise DistributeError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        # CPU replicas reduce on one device: the collective all-reduce of CPUs can run the
        # synchronized BatchNorm's all-reduces in another order on each replica (an error)
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    cluster = check_tf_config()
    return _multi_worker(cluster, timeout)


def check_tf_config(environ=os.environ) -> dict:
    """The ``TF_CONFIG`` of this worker, checked: a cluster with workers (``host:port``)
    and this process's task in it. Raises :class:`DistributeError` naming what is wrong."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise DistributeError("strategy multi_worker needs the environment variable TF_CONFIG "
                              "on every worker, naming all workers and this one, e.g. "
                              f"{TF_CONFIG_EXAMPLE} (index 1 on the second machine)")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(f"TF_CONFIG is not valid ({type(e).__name__}: {e}): expected "
                              f"e.g. {TF_CONFIG_EXAMPLE}") from None
    tasks = config["cluster"].get(kind) if isinstance(config["cluster"], dict) else None
    if not isinstance(workers, list) or not workers or any(
            not isinstance(w, str) or ":" not in w for w in workers):
        raise DistributeError(f"TF_CONFIG cluster.worker must be a list of 'host:port', got "
                              f"{workers!r}")
    if kind not in ("worker", "chief") or not isinstance(tasks, list) or \
            not isinstance(index, int) or not 0 <= index < len(tasks):
        raise DistributeError(f"TF_CONFIG task {task!r} is not in the cluster: type must be "
                              f"worker (or chief) and index < the number of such tasks")
    return config


def _multi_worker(config: dict, timeout: float) -> tf.distribute.Strategy:
    from tensorflow.python.distribute import collective_all_reduce_strategy as car

    # TensorFlow's own knobs of its cluster health check (class attributes, read when the
    # strategy starts): wait `timeout` s for all workers, then ping them every 5 s
    extended = car.CollectiveAllReduceExtended
    extended._check_health_initial_timeout = max(1, int(timeout))
    extended._check_health_interval = 5
    extended._check_health_timeout = 5
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:
        if "Timeout waiting for the cluster" not in str(e):
            raise
        others = [w for i, w in enumerate(config["cluster"]["worker"])
                  if not (config["task"]["type"] == "worker" and i == config["task"]["index"])]
        raise DistributeError(
            f"not all workers answered within {timeout:g} s (this is "
            f"{config['task']['type']} {config['task']['index']}; the others: "
            f"{', '.join(others)}): start every worker with its TF_CONFIG, check the "
            "addresses and that the ports are open between the machines") from None


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes files: always, except a non-chief multi-worker task
    (the chief is task ``chief``, or worker 0 when the cluster has no chief)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    kind, index = resolver.task_type, resolver.task_id
    return kind == "chief" or (kind in (None, "worker") and index == 0 and
                               "chief" not in resolver.cluster_spec().as_dict())


def agree(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's ``value`` on every worker (a collective: all workers must call it)."""
    mine = value if is_chief(strategy) else 0
    local = len(strategy.extended.worker_devices)      # replicas per worker (all alike)
    per_replica = strategy.run(lambda: tf.constant(mine, tf.int64))
    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)) // local


def synchronize_batch_norm(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` whose BatchNormalization layers normalize with the statistics
    of the global batch (``synchronized=True``; on one device the same numbers as
    before, up to float rounding); ``model`` itself is not changed. Create it under
    the strategy's scope.

    Example::

        with strategy.scope():
            model = synchronize_batch_norm(models.build("mnist_bnn", (28, 28, 1)))
    """
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            config.update(synchronized=True, fused=None)
        return type(layer).from_config(config)

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
