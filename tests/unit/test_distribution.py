"""Strategy choice from the flag, TF_CONFIG, Vertex AI's CLUSTER_SPEC and the GPUs present."""

import json

import pytest

import trainer  # noqa: F401
from trainer.training import distribution

TWO_WORKERS = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
ONE_WORKER = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}


@pytest.mark.parametrize("flag, tf_config, gpus, expected", [
    ("auto", {}, 0, "default"),
    ("auto", {}, 1, "default"),
    ("auto", {}, 4, "mirrored"),
    ("auto", TWO_WORKERS, 0, "multi_worker_mirrored"),
    ("auto", TWO_WORKERS, 8, "multi_worker_mirrored"),
    ("auto", ONE_WORKER, 2, "mirrored"),
    ("one_device", TWO_WORKERS, 4, "one_device"),
    ("mirrored", {}, 0, "mirrored"),
    ("multi_worker_mirrored", ONE_WORKER, 0, "multi_worker_mirrored"),
])
def test_resolve(flag, tf_config, gpus, expected):
    assert distribution.resolve(flag, tf_config, gpus) == expected


@pytest.mark.parametrize("tf_config, chief", [
    ({}, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "worker", "index": 0}}, False),
])
def test_is_chief(tf_config, chief):
    assert distribution.is_chief(tf_config) is chief


def test_tf_config_is_read_from_the_environment():
    env = {"TF_CONFIG": json.dumps(TWO_WORKERS)}
    assert distribution.cluster_spec_from_env(env) == TWO_WORKERS
    assert distribution.cluster_spec_from_env({}) == {}


def test_vertex_cluster_spec_becomes_tf_config():
    spec = {"cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222", "w1:2222"]},
            "environment": "cloud", "task": {"type": "workerpool1", "index": 1}}
    tf_config = distribution.cluster_spec_from_env({"CLUSTER_SPEC": json.dumps(spec)})
    assert tf_config == {"cluster": {"chief": ["chief:2222"], "worker": ["w0:2222", "w1:2222"]},
                         "task": {"type": "worker", "index": 1}}
    assert distribution.cluster_size(tf_config) == 3
    assert not distribution.is_chief(tf_config)
    chief_spec = dict(spec, task={"type": "workerpool0", "index": 0})
    assert distribution.is_chief(distribution.cluster_spec_from_env({"CLUSTER_SPEC": json.dumps(chief_spec)}))


def test_vertex_reduction_server_and_evaluator_pools_are_not_tensorflow_workers():
    """Pool 2 is the parameter-server / Reduction Server pool and pool 3 the evaluators: not in the collectives."""
    spec = {"cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222", "w1:2222"],
                        "workerpool2": ["rs0:2222", "rs1:2222"], "workerpool3": ["eval:2222"]},
            "environment": "cloud", "task": {"type": "workerpool1", "index": 1}}

    def derived(pool, index):
        return distribution.cluster_spec_from_env({"CLUSTER_SPEC": json.dumps(dict(spec, task={"type": pool,
                                                                                               "index": index}))})

    worker = derived("workerpool1", 1)
    assert worker == {"cluster": {"chief": ["chief:2222"], "worker": ["w0:2222", "w1:2222"]},
                      "task": {"type": "worker", "index": 1}}
    assert distribution.cluster_size(worker) == 3  # the chief and two workers; the reduction servers are not
    assert distribution.resolve("auto", worker, num_gpus=1) == "multi_worker_mirrored"
    chiefs = [distribution.is_chief(derived(pool, index))
              for pool, hosts in spec["cluster"].items() for index in range(len(hosts))]
    assert chiefs == [True, False, False, False, False, False]
    assert derived("workerpool2", 1)["task"] == {"type": "ps", "index": 1}
    assert derived("workerpool3", 0)["task"] == {"type": "evaluator", "index": 0}
    assert derived("workerpool2", 0)["cluster"] == worker["cluster"]
    # A chief and a Reduction Server only (no worker pool): one TensorFlow task, no multi-worker strategy.
    alone = {"cluster": {"workerpool0": ["chief:2222"], "workerpool2": ["rs0:2222"]},
             "task": {"type": "workerpool0", "index": 0}}
    tf_config = distribution.cluster_spec_from_env({"CLUSTER_SPEC": json.dumps(alone)})
    assert tf_config == {"cluster": {"chief": ["chief:2222"]}, "task": {"type": "chief", "index": 0}}
    assert distribution.resolve("auto", tf_config, num_gpus=0) == "default"


def test_default_strategy_on_a_single_cpu_machine():
    strategy = distribution.get_strategy("auto", tf_config={})
    assert distribution.name_of(strategy) == "default"
    assert strategy.num_replicas_in_sync == 1
