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
  statistics of the global batch (:class:`SynchronizedBatchNormalization`, which
  survives the copies that methods make), as one device would; per-replica
  statistics would train a different network.
- :func:`is_chief`: only the chief writes files (models, reports, manifests);
  the other workers run the same steps (every collective needs all of them).
- :func:`agree`: one integer every worker agrees on (the chief's); :func:`barrier`:
  wait for every worker; :func:`resumable`: how much saved work (epochs, rounds,
  scanned layers) every worker resumes from after a relaunch (the chief's files decide).

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
import socket
import time

import tensorflow as tf

from bnnprune_tf.errors import DistributeError

STRATEGIES = ("none", "mirrored", "multi_worker")
TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


def strategy(name: str = "none", timeout: float = 120.0) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``name`` (one of :data:`STRATEGIES`).

    Args:
        timeout: ``multi_worker`` only: seconds to wait for every worker at the
            start, and the longest a collective (one gradient all-reduce) may
            take before the run stops with an error; a worker that dies mid-run
            is noticed by TensorFlow's coordination service within ~30 s.
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
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    # TensorFlow's coordination service, as MultiWorkerMirroredStrategy would configure it,
    # with limits: a worker silent for 30 s is down (shorter beats go missing when
    # a loaded host starves a worker's heartbeat thread) and every collective of the others
    # stops (an UnavailableError); TensorFlow's start-up itself waits for every worker
    # forever, hence wait_for_workers first
    cluster = tf.train.ClusterSpec(config["cluster"])
    if context.context().coordination_service is None:
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster),
            cluster_register_timeout_in_ms=int(timeout * 1000), heartbeat_timeout_in_ms=30_000,
            coordinated_jobs=[coordination_config_pb2.CoordinatedJob(
                name=job, num_tasks=cluster.num_tasks(job))
                for job in ("chief", "worker") if job in cluster.jobs])
    wait_for_workers(config, timeout)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def wait_for_workers(config: dict, timeout: float) -> None:
    """Listen on this task's port until every other task's port answers (TensorFlow's own
    start-up waits for them forever); a :class:`DistributeError` after ``timeout`` s.

    Example::

        wait_for_workers(check_tf_config(), timeout=60)
    """
    task = config["task"]
    addresses = [a for job in ("chief", "worker") for a in config["cluster"].get(job, [])]
    mine = config["cluster"][task["type"]][task["index"]]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(mine.rsplit(":", 1)[1])))
        listener.listen()
    except (OSError, ValueError) as e:
        listener.close()
        raise DistributeError(f"this worker cannot listen on {mine} ({e}): another process "
                              "uses the port, or the address is not this machine's; fix "
                              "TF_CONFIG") from None
    deadline = time.monotonic() + timeout
    missing = [a for a in addresses if a != mine]
    try:
        while missing:
            for address in list(missing):
                host, port = address.rsplit(":", 1)
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    missing.remove(address)
                except OSError:
                    pass
            if missing and time.monotonic() > deadline:
                raise DistributeError(
                    f"not all workers answered within {timeout:g} s (this is {task['type']} "
                    f"{task['index']} at {mine}; silent: {', '.join(missing)}): start every "
                    "worker with its TF_CONFIG, check the addresses and that the ports are "
                    "open between the machines")
            time.sleep(0.2 if missing else 0)
    finally:
        listener.close()


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


def barrier(strategy: tf.distribute.Strategy | None = None) -> None:
    """Return once every worker of a ``multi_worker`` run has called it (a no-op
    otherwise), e.g. before the chief removes files the others may still write."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        agree(strategy, 0)


def resumable(count: int) -> int:
    """How many saved steps (epochs, rounds, scanned layers) to resume from, given
    the ``count`` this process sees in the run directory: ``count`` itself, except
    under ``multi_worker``, where every worker takes the chief's count (a collective:
    every worker calls it at the same point). A worker that sees fewer steps than the
    chief cannot read the chief's files: a :class:`DistributeError`.

    Example::

        done = resumable(len(saved_rounds))   # then skip rounds[:done], train the rest
    """
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return count
    chief = agree(strategy, count)
    if chief > count:
        raise DistributeError(
            f"this worker sees {count} of the {chief} finished steps that the chief saved: "
            "resuming a multi_worker run needs the run directory on a file system all "
            "workers share (or a new run directory)")
    return chief


@tf.keras.utils.register_keras_serializable("bnnprune")
class SynchronizedBatchNormalization(tf.keras.layers.BatchNormalization):
    """``BatchNormalization(synchronized=True)`` that stays synchronized through
    ``get_config``: tf-keras 2.16 leaves ``synchronized`` out of the config, so every
    clone (``clone_model``, a method's masked copy, a saved model) would silently go back
    to per-replica statistics.

    Example::

        layer = SynchronizedBatchNormalization.from_config(bn.get_config())
    """

    def __init__(self, **kwargs):
        kwargs.pop("synchronized", None)
        kwargs.pop("fused", None)
        super().__init__(synchronized=True, **kwargs)


def synchronize_batch_norm(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` whose BatchNormalization layers normalize with the statistics
    of the global batch (:class:`SynchronizedBatchNormalization`; on one device the same
    numbers as before, up to float rounding); ``model`` itself is not changed. Create it
    under the strategy's scope.

    Example::

        with strategy.scope():
            model = synchronize_batch_norm(models.build("mnist_bnn", (28, 28, 1)))
    """
    def clone(layer):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            return SynchronizedBatchNormalization.from_config(layer.get_config())
        return type(layer).from_config(layer.get_config())

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def local_tf_config(ports: list[int], index: int) -> str:
    """``TF_CONFIG`` of worker ``index`` in a cluster of workers on this host's ``ports``.

    Example::

        env["TF_CONFIG"] = local_tf_config(free_local_ports(2), 0)
    """
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def free_local_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now, for a cluster of workers on this host.

    Example::

        ports = free_local_ports(2)   # TF_CONFIG workers: [f"localhost:{p}" for p in ports]
    """
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
