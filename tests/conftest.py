"""Shared test set-up: this process's TensorFlow and environment, and the fixtures of tests/support/.

Two layers: in-process tests call the trainer's steps (`train.run(cfg, splits=...)`) on small slices of the real
data set, decoded once per session, or on TFDS mock data; end-to-end tests (marked `e2e`) start the trainer as a
process, as a user or a launcher does, for what only a process shows: the command line, exit codes, signals, many
workers. `make test-fast` runs the first layer alone.

The helpers are plain modules in tests/support/ (import them from there: `from support.data import splits`); the
fixtures are its plugin, `support.fixtures`. The pytest process splits its CPU into two logical devices before
TensorFlow starts, so that MirroredStrategy has two replicas in-process; the default strategy still uses one.
"""

import os

import pytest

pytest.register_assert_rewrite("support")  # its helpers assert, with pytest's messages
from support.processes import LAUNCHER_ENV  # noqa: E402

for _name in LAUNCHER_ENV:  # the in-process trainer reads TF_CONFIG/CLUSTER_SPEC from os.environ
    os.environ.pop(_name, None)

import trainer  # noqa: E402,F401  (tf-keras before TensorFlow)
from trainer import logs  # noqa: E402

with logs.quiet_native_startup():  # TensorFlow's start-up notices, as the trainer filters them
    import tensorflow as tf
    tf.config.list_physical_devices("GPU")

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

pytest_plugins = ["support.fixtures", "support.launch"]

