"""Backups as Keras's BackupAndRestore leaves them, made in a test's own folder."""

import os

import numpy as np
import tensorflow as tf


def saved_backup(directory, count=3):
    """A backup as BackupAndRestore leaves it: `count` checkpoints in <dir>/chief (all kept), newest last."""
    variable = tf.Variable(np.arange(1000, dtype=np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), f"{directory}/chief", max_to_keep=count)
    for step in range(count):
        variable.assign_add(tf.ones(1000))
        manager.save()
    return manager


def latest(directory):
    return os.path.basename(tf.train.latest_checkpoint(f"{directory}/chief") or "none")
