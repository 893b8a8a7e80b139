"""Shared test fixtures.

Two layers: in-process tests call the trainer's steps (`train.run(cfg, splits=...)`) on small slices of the real
data set, decoded once per session, or on TFDS mock data; end-to-end tests (marked `e2e`) start the trainer as a
process, as a user or a launcher does, for what only a process shows: the command line, exit codes, signals, many
workers. `make test-fast` runs the first layer alone.

The pytest process splits its CPU into two logical devices before TensorFlow starts, so that MirroredStrategy has
two replicas in-process; the default strategy still uses one.
"""

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
sys.path.insert(0, str(ROOT / "bench"))
from common import LAUNCHER_ENV, clean_env, free_ports  # noqa: E402,F401  (free_ports: for the tests)

for _name in LAUNCHER_ENV:  # the in-process trainer reads TF_CONFIG/CLUSTER_SPEC from os.environ
    os.environ.pop(_name, None)

import trainer  # noqa: E402,F401  (tf-keras before TensorFlow)
from trainer import logs  # noqa: E402

with logs.quiet_native_startup():  # TensorFlow's start-up notices, as the trainer filters them
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)


def data_flags():
    flags = [f"--data_dir={DATA_DIR}"]
    if TFDS_MANUAL_DIR:
        flags.append(f"--tfds_manual_dir={TFDS_MANUAL_DIR}")
    return flags


@pytest.fixture(scope="session")
def fashion_builder():
    """The TFDS builder of Fashion-MNIST, prepared once in DATA_DIR (a no-op when `make` already did it)."""
    from trainer import data
    return data.prepare(DATA_DIR, TFDS_MANUAL_DIR or None)


@pytest.fixture(scope="session")
def prepared_data(fashion_builder):
    """DATA_DIR, with Fashion-MNIST prepared in it."""
    return DATA_DIR


@pytest.fixture(scope="session")
def fashion(fashion_builder):
    """The first 10,000 training examples and the whole test split, decoded once: (train, test) array pairs."""
    from trainer import data
    return data.load(fashion_builder, "train[:10000]"), data.load(fashion_builder, "test")


def splits(fashion, train_examples, validation_split=0.0, test_examples=None):
    """A data.Splits as the trainer would load it with --train_examples / --validation_split, from `fashion`."""
    from trainer import data
    (images, labels), (test_images, test_labels) = fashion
    train = (images[:train_examples], labels[:train_examples])
    validation = None
    held_out = int(round(train_examples * validation_split))
    if held_out:
        train, validation = data.hold_out(*train, held_out)
    return data.Splits(train=train, test=(test_images[:test_examples], test_labels[:test_examples]),
                       validation=validation)


def train_in_process(output_dir, data_splits, strategy=None, environ=None, **settings):
    """Runs the trainer's steps in this process on `data_splits`; returns the metrics it published."""
    from trainer import config, train
    cfg = config.make(output_dir=str(output_dir), environ=environ, **settings)
    return train.run(cfg, splits=data_splits, strategy=strategy)


@pytest.fixture
def gcs(monkeypatch):
    """A Cloud Storage emulator in this process with a bucket `runs`; clients (google-cloud-storage) reach it
    through STORAGE_EMULATOR_HOST. Yields the bucket."""
    from gcp_storage_emulator import server as emulator
    server = emulator.create_server("127.0.0.1", 0, in_memory=True, default_bucket="runs")
    server.start()
    host, port = server._api._httpd.server_address
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{host}:{port}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    from google.cloud import storage
    yield storage.Client().bucket("runs")
    server.stop()


def run_trainer(*args, env=None, timeout=600, module="trainer.task"):
    """Runs the trainer as a user would (a fresh process); returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir):
    from trainer import outputs
    return outputs.read_metrics(str(output_dir))


def assert_ok(result):
    assert result.returncode == 0, f"trainer failed ({result.returncode}):\n{result.stderr[-4000:]}"


def worker_tf_configs(count):
    """TF_CONFIG values for `count` workers on localhost, as a cluster scheduler would set them."""
    hosts = [f"localhost:{port}" for port in free_ports(count)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(count)]


def start_trainer(*args, env=None, log_path):
    """Starts the trainer in the background, its output going to `log_path`; returns the Popen (the trainer's own
    process: signals sent to it reach Python, not a shell)."""
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=ROOT, env=clean_env(env),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_all(processes, timeout=600):
    return [p.wait(timeout=timeout) for p in processes]
