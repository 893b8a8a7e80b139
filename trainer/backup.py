"""The preemption backup: Keras's `BackupAndRestore` state plus the per-epoch history, kept in --checkpoint_dir.

A rerun of the same command finds them and resumes; a finished run deletes them.
"""

import json
import os
import time

import tensorflow as tf
import tf_keras
from absl import logging

from trainer.errors import UserError

HISTORY_FILE = "history.json"


def check_location(path):
    """The backup is written through TensorFlow's file systems: prove they can write there before training."""
    probe = f"{path.rstrip('/')}/.write-test-{os.getpid()}"
    try:
        tf.io.gfile.makedirs(path)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        hint = (" TensorFlow's gs:// ignores STORAGE_EMULATOR_HOST: with an emulator, pass a local --checkpoint_dir."
                if path.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST") else "")
        raise UserError(f"cannot write the preemption backup to --checkpoint_dir={path} "
                        f"({type(error).__name__}); choose a writable folder or gs:// prefix.{hint}") from None


def callbacks(checkpoint_dir, chief):
    """Keras's backup of the training state, and the history that goes with it."""
    history = EpochHistory(os.path.join(checkpoint_dir, HISTORY_FILE), write=chief)
    return [tf_keras.callbacks.BackupAndRestore(backup_dir=checkpoint_dir), history], history


class EpochHistory(tf_keras.callbacks.Callback):
    """Per-epoch loss, accuracy and time, kept beside the backup so a resumed run still has its whole history.

    It also says, in the log, when a run resumes from a backup instead of starting afresh.
    """

    def __init__(self, path, write):
        super().__init__()
        self.path, self.write = path, write
        self.rows, self.resumed_from_epoch, self.epochs_this_run = [], 0, 0
        self._first_epoch, self._epoch_started = True, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._first_epoch = False
            if epoch > 0:
                self.resumed_from_epoch = epoch
                if tf.io.gfile.exists(self.path):
                    with tf.io.gfile.GFile(self.path) as f:
                        self.rows = [row for row in json.load(f) if row["epoch"] <= epoch]
                logging.info("Resumed from the backup in %s: epochs 1-%d were done, continuing at epoch %d.",
                             os.path.dirname(self.path), epoch, epoch + 1)
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_started, 3)}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        self.rows.append(row)
        self.epochs_this_run += 1
        if self.write:
            tf.io.gfile.makedirs(os.path.dirname(self.path))
            with tf.io.gfile.GFile(self.path + ".tmp", "w") as f:
                json.dump(self.rows, f)
            tf.io.gfile.rename(self.path + ".tmp", self.path, overwrite=True)

    def delete(self):
        """After success, like the backup itself: nothing is left to resume."""
        if self.write and tf.io.gfile.exists(self.path):
            tf.io.gfile.remove(self.path)
        directory = os.path.dirname(self.path)
        if self.write and tf.io.gfile.isdir(directory) and not tf.io.gfile.listdir(directory):
            tf.io.gfile.rmtree(directory)
