"""Shared test fixtures: the prepared Fashion-MNIST data (offline, from the manual folder) and a trainer runner."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds")
_default_manual = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
TFDS_MANUAL_DIR = os.environ.get("TFDS_MANUAL_DIR") or (str(_default_manual) if _default_manual.is_dir() else "")


def data_flags():
    flags = [f"--data_dir={DATA_DIR}"]
    if TFDS_MANUAL_DIR:
        flags.append(f"--tfds_manual_dir={TFDS_MANUAL_DIR}")
    return flags


@pytest.fixture(scope="session")
def prepared_data():
    """Fashion-MNIST prepared once per session in DATA_DIR (a no-op when `make` already did it)."""
    subprocess.run([sys.executable, "-m", "trainer.prepare_data", *data_flags()], check=True, cwd=ROOT,
                   capture_output=True)
    return DATA_DIR


def trainer_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "CLUSTER_SPEC", "AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR",
                        "AIP_TENSORBOARD_LOG_DIR")}
    env.update(extra or {})
    return env


def run_trainer(*args, env=None, timeout=600, script=None):
    """Runs the trainer as a user would (a fresh process); returns the CompletedProcess.

    `script`: a test script to run instead of `python -m trainer.task` (it must end by calling the trainer).
    """
    entry = [str(ROOT / "tests" / script)] if script else ["-m", "trainer.task"]
    return subprocess.run([sys.executable, *entry, *args], cwd=ROOT, env=trainer_env(env),
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


def assert_ok(result):
    assert result.returncode == 0, f"trainer failed ({result.returncode}):\n{result.stderr[-4000:]}"


def free_ports(count):
    """Ports free on loopback right now (the OS picks them; the sockets are closed before use)."""
    import socket
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_tf_configs(count):
    """TF_CONFIG values for `count` workers on localhost, as a cluster scheduler would set them."""
    hosts = [f"localhost:{port}" for port in free_ports(count)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(count)]


def start_trainer(*args, env=None, log_path, script=None):
    """Starts the trainer in the background, its output going to `log_path`; returns the Popen."""
    entry = [str(ROOT / "tests" / script)] if script else ["-m", "trainer.task"]
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, *entry, *args], cwd=ROOT, env=trainer_env(env),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_all(processes, timeout=600):
    return [p.wait(timeout=timeout) for p in processes]
