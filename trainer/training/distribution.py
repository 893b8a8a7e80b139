"""Choosing the tf.distribute strategy, and who in a cluster is the chief.

One function, `get_strategy`, maps the `--strategy` flag to a strategy, as TensorFlow Model Garden does. It must run
before any other TensorFlow op: MultiWorkerMirroredStrategy configures the runtime's collectives when created.
"""

import json
import os

import tensorflow as tf


def cluster_spec_from_env(environ=None):
    """The `TF_CONFIG` dict of this process ({} if unset).

    Vertex AI sets `TF_CONFIG` for TensorFlow jobs; where only its `CLUSTER_SPEC` is present (custom containers
    can see either), the same cluster and task are derived from it. Vertex names its replica pools
    `workerpool0..3` by position (Vertex AI's distributed-training docs): pool 0 is the primary replica (the
    chief), pool 1 the workers, pool 2 the parameter servers or a Reduction Server, pool 3 the evaluators. Only
    pools 0 and 1 take part in MultiWorkerMirroredStrategy's collectives, so only they form the cluster; a
    process in pool 2 or 3 gets TensorFlow's name for its role (`ps`, `evaluator`), which is not a chief and not
    counted by `cluster_size`.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return json.loads(environ["TF_CONFIG"])
    if environ.get("CLUSTER_SPEC"):
        spec = json.loads(environ["CLUSTER_SPEC"])
        pools = spec.get("cluster", {})
        task = spec.get("task", {})
        cluster = {}
        for pool, role in (("workerpool0", "chief"), ("workerpool1", "worker")):
            if pools.get(pool):
                cluster[role] = list(pools[pool])
        roles = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"}
        pool, index = task.get("type", "workerpool0"), int(task.get("index", 0))
        return {"cluster": cluster, "task": {"type": roles.get(pool, pool), "index": index}}
    return {}


def cluster_size(tf_config):
    """Number of chief + worker tasks in a TF_CONFIG dict (0 without a cluster)."""
    cluster = tf_config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def task_name(tf_config):
    """This process's task in the cluster, e.g. "worker-1"; "single" without a cluster."""
    task = tf_config.get("task", {})
    return f"{task['type']}-{int(task.get('index', 0))}" if task.get("type") else "single"


def is_chief(tf_config):
    """The chief writes outputs: the `chief` task, or worker 0 when the cluster has no chief."""
    task = tf_config.get("task", {})
    task_type, index = task.get("type"), int(task.get("index", 0))
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {})


def resolve(name, tf_config, num_gpus):
    """The concrete strategy name that `name` means here (resolves `auto`)."""
    if name != "auto":
        return name
    if cluster_size(tf_config) > 1:
        return "multi_worker_mirrored"
    if num_gpus > 1:
        return "mirrored"
    return "default"


def name_of(strategy):
    """The --strategy name that describes a strategy object (for the log and metrics.json)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker_mirrored"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "one_device" if len(strategy.extended.worker_devices) == 1 else "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    return "default"


def resolved_name(name, tf_config):
    """The concrete strategy `--strategy=name` creates here."""
    return resolve(name, tf_config, len(tf.config.list_physical_devices("GPU")))


def get_strategy(name, tf_config=None, register_timeout_seconds=0):
    """Creates the strategy for `--strategy=name`.

    `register_timeout_seconds`: how long a multi-worker strategy's start-up waits for every task to register with
    the coordination service before it fails (0: TensorFlow's default). The trainer meets its peers before
    (resilience.cluster), so this bounds only a peer lost in between.
    """
    tf_config = cluster_spec_from_env() if tf_config is None else tf_config
    gpus = tf.config.list_physical_devices("GPU")
    resolved = resolve(name, tf_config, len(gpus))
    if resolved == "multi_worker_mirrored":
        if tf_config and not os.environ.get("TF_CONFIG"):
            # Derived from Vertex's CLUSTER_SPEC: the cluster resolver reads TF_CONFIG.
            os.environ["TF_CONFIG"] = json.dumps(tf_config)
        if register_timeout_seconds:
            configure_coordination(tf_config, register_timeout_seconds)
        implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                          else tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    elif resolved == "mirrored":
        # All GPUs; on a machine without, all logical CPU devices (tests split the CPU in two).
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif resolved == "one_device":
        # A MirroredStrategy over one device rather than OneDeviceStrategy: the same placement, and Keras's
        # BackupAndRestore (preemption) supports it, which it does not for OneDeviceStrategy.
        strategy = tf.distribute.MirroredStrategy(devices=["/gpu:0" if gpus else "/cpu:0"])
    else:
        strategy = tf.distribute.get_strategy()
    return strategy


# The coordination service marks a worker lost after this long without a heartbeat: the bound on a survivor
# noticing a frozen or vanished peer outside `fit` (resilience/peers.py); inside `fit` a collective with a vanished
# peer fails sooner (measured: 6-7 s frozen). Not TensorFlow's 10 s: on this 2-core machine at load 18 (CI, five
# test runs at once) an uninterrupted 2-worker run missed its heartbeats for 10 s and was aborted.
HEARTBEAT_SECONDS = 30.0


def configure_coordination(tf_config, register_timeout_seconds):
    """The coordination service as MultiWorkerMirroredStrategy configures it (collective_all_reduce_strategy.py,
    `_initialize_multi_worker`: it keeps a configuration that exists), with a bounded cluster registration."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    cluster = multi_worker_util.normalize_cluster_spec(tf_config["cluster"])
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(register_timeout_seconds * 1000),
        heartbeat_timeout_in_ms=int(HEARTBEAT_SECONDS * 1000))
