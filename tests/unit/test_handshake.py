"""What the workers' handshake compares: the flags and what they resolve to on each host (precision, replicas,
strategy, global batch, versions) and the backup folder; one line naming the difference, on every worker."""

import threading

import pytest

from support.processes import free_ports
from trainer.config import run_config
from trainer.errors import RetryableError, UserError
from trainer.resilience import cluster


def own_settings(**flags):
    return cluster.training_settings(run_config.make(model="mlp", output_dir="/tmp/out", **flags))


def test_the_handshake_compares_what_training_will_use():
    own = own_settings(checkpoint_dir="/shared/backup")
    assert own["checkpoint_dir"] == "/shared/backup"
    assert {"resolved precision", "replicas per worker", "strategy kind", "global batch", "TensorFlow version",
            "tf-keras version"} <= set(own)
    assert own["resolved precision"] in ("float32", "mixed_bfloat16") and own["replicas per worker"] >= 1


@pytest.mark.parametrize("setting, theirs, error, words", [
    ("checkpoint_dir", "/elsewhere", UserError, "--checkpoint_dir=/elsewhere there, --checkpoint_dir=/b here"),
    ("resolved precision", "mixed_bfloat16", RetryableError, "another resolved precision: mixed_bfloat16 there"),
    ("replicas per worker", 4, RetryableError, "the hosts differ"),
    ("TensorFlow version", "2.20.0", UserError, "the same image"),
])
def test_a_difference_is_one_line_naming_it_and_the_host_s_is_retry_me(setting, theirs, error, words):
    own = {"checkpoint_dir": "/b", "resolved precision": "float32", "replicas per worker": 1,
           "TensorFlow version": "2.21.0"}
    found = cluster.difference("worker-1", own, {**own, setting: theirs})
    assert isinstance(found, error) and words in str(found) and "\n" not in str(found), found
    assert cluster.difference("worker-1", own, dict(own)) is None


def test_two_workers_whose_hosts_resolve_precision_otherwise_both_stop_with_75():
    ports = free_ports(2)
    hosts = [f"localhost:{port}" for port in ports]
    base = own_settings()
    owns = [{**base, "resolved precision": p} for p in ("float32", "mixed_bfloat16")]
    raised = {}

    def worker(index):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        try:
            cluster.ClusterStartup(tf_config, owns[index], timeout_seconds=30).form()
        except Exception as error:  # noqa: BLE001  what each worker stops with
            raised[index] = error
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(raised) == [0, 1] and all(isinstance(e, RetryableError) for e in raised.values()), raised
    assert "float32 here" in str(raised[0]) and "mixed_bfloat16 here" in str(raised[1])
