"""Shared test set-up: this process's TensorFlow and environment, and the fixtures of tests/support/.

A test's folder is its kind. `tests/unit/`: in-process tests that call the trainer's steps (`train.run(cfg,
splits=...)`) on small slices of the real data set, decoded once per session, or on TFDS mock data (`make
test-fast` runs this folder alone). `tests/e2e/`: tests that start the trainer or another command as a process, as a
user does, for what only a process shows: the command line, exit codes, signals, many workers. `tests/launch/`: the
launchers (docker, Kubernetes, JobSet, TrainJob, Katib, Vertex AI), the package and the image. Every test of the last
two folders is marked `e2e` here (and the image's `image` too, in its module).

The helpers are plain modules in tests/support/ (import them from there: `from support.data import splits`); the
fixtures are its plugin, `support.fixtures`. The pytest process splits its CPU into two logical devices before
TensorFlow starts, so that MirroredStrategy has two replicas in-process; the default strategy still uses one.
"""

import os
import pathlib

import pytest

pytest.register_assert_rewrite("support")  # its helpers assert, with pytest's messages
from support.processes import LAUNCHER_ENV  # noqa: E402

for _name in LAUNCHER_ENV:  # the in-process trainer reads TF_CONFIG/CLUSTER_SPEC from os.environ
    os.environ.pop(_name, None)

import trainer  # noqa: E402,F401  (tf-keras before TensorFlow)
from trainer.monitoring import logs  # noqa: E402

with logs.quiet_native_startup():  # TensorFlow's start-up notices, as the trainer filters them
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

pytest_plugins = ["support.fixtures", "support.launch"]


def pytest_collection_modifyitems(items):
    """Marks every test of tests/e2e/ and tests/launch/ `e2e`: `-m "not e2e"` is tests/unit/ alone."""
    for item in items:
        if pathlib.Path(str(item.fspath)).parent.name in ("e2e", "launch"):
            item.add_marker(pytest.mark.e2e)
