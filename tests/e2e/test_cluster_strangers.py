"""Two real workers meet and train while a stranger works against them on the pod network (issue 24).

The stranger sends worker 0 the one forged line that used to fail a job for good, floods its cluster port with
junk and holds a connection open on worker 1's, as an outsider with access to the port would. The workers share
a secret, one from a file (--cluster_secret_file's $FMNIST_CLUSTER_SECRET_FILE), the other from
$FMNIST_CLUSTER_SECRET: the launchers' two ways.
"""

import json
import os
import socket
import threading
import time

import pytest

from support.data import data_flags
from support.processes import start_trainer, wait_all, worker_tf_configs

pytestmark = pytest.mark.e2e

RUN = ("--model=mlp", "--recipe=seed", "--batch_size=128", "--train_examples=3000", "--epochs=1")
FORGED = b'{"task":"worker-1","settings":{"epochs":999}}\n'


def port_of(tf_config):
    config = json.loads(tf_config)
    return int(config["cluster"]["worker"][config["task"]["index"]].rsplit(":", 1)[1])


def wait_for_port(port, processes, seconds=120):
    """Until the worker listens on its cluster port (it waits there for its peer)."""
    deadline = time.monotonic() + seconds
    while True:
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, "no cluster port"
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


def flood(port, stop, counter):
    """Connect, send junk, close, as fast as it goes, until `stop`."""
    while not stop.is_set():
        try:
            with socket.create_connection(("localhost", port), timeout=1) as connection:
                connection.sendall(os.urandom(2048) + b"\n" + b"x" * 8192)
                counter[0] += 1
        except OSError:
            time.sleep(0.05)


def test_two_workers_meet_and_train_while_a_stranger_forges_floods_and_stalls(prepared_data, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("0123456789abcdef0123456789abcdef\n")
    configs = worker_tf_configs(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    args = (*RUN, f"--output_dir={tmp_path / 'out'}", *data_flags())
    workers = [start_trainer(*args, env={"TF_CONFIG": configs[0], "FMNIST_CLUSTER_SECRET_FILE": str(secret_file)},
                             log_path=logs[0])]
    stop, sent, held = threading.Event(), [0], None
    try:
        wait_for_port(port_of(configs[0]), workers)
        with socket.create_connection(("localhost", port_of(configs[0])), timeout=5) as connection:
            connection.sendall(FORGED)  # the line that used to fail the job for good (exit 2)
        threading.Thread(target=flood, args=(port_of(configs[0]), stop, sent), daemon=True).start()
        time.sleep(3)
        assert workers[0].poll() is None, logs[0].read_text()[-2000:]
        workers.append(start_trainer(*args, env={"TF_CONFIG": configs[1],
                                                 "FMNIST_CLUSTER_SECRET": "0123456789abcdef0123456789abcdef"},
                                     log_path=logs[1]))
        wait_for_port(port_of(configs[1]), workers)
        held = socket.create_connection(("localhost", port_of(configs[1])), timeout=5)
        held.sendall(b'{"type":')  # and never more
        assert wait_all(workers, timeout=300) == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    finally:
        stop.set()
        if held is not None:
            held.close()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    texts = [log.read_text() for log in logs]
    assert sent[0] > 10, "the flood never reached the port"
    for text in texts:
        assert "every exchange proven with the job's secret" in text
        assert "Traceback" not in text and "runs with other settings" not in text
        assert text.count("Cluster port: ignored") <= 2, text  # one line per address (IPv4 and IPv6 loopback)
    assert "Cluster port: ignored" in texts[0]
    assert "results in" in texts[0]
