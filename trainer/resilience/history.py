"""The per-epoch history, kept beside the backup so that a resumed run still has its whole history."""

import json
import os
import time

import tensorflow as tf
import tf_keras
from absl import logging
from tf_keras.src.utils.mode_keys import ModeKeys

from trainer.storage.files import failed_write, write_json

HISTORY_FILE = "history.json"


class EpochHistory(tf_keras.callbacks.Callback):
    """Per-epoch loss, accuracy and time, kept beside the backup so a resumed run still has its whole history.

    It also says, in the log, where a run resumes when it does not start afresh.
    """

    def __init__(self, path, write, steps_per_epoch, start_step=0):
        super().__init__()
        self.path, self.write, self.steps_per_epoch, self.start_step = path, write, steps_per_epoch, start_step
        self.rows, self.resumed_from_epoch, self.resumed_from_step, self.epochs_this_run = [], 0, 0, 0
        self._epoch_started = 0.0
        self.note = ""  # said after where the run resumes (an elastic resume: the worker counts)
        self.goodput = None  # goodput.Goodput, told where the run resumes

    def on_train_begin(self, logs=None):
        # Runs after Backup.on_train_begin restored the training state: where Keras will continue.
        state = getattr(self.model, "_training_state", None)
        if state is None:
            return
        epoch, step = (int(value) for value in  # NumPy integers: metrics.json needs Python ones
                       state.maybe_load_initial_counters_from_ckpt(self.steps_per_epoch, 0, ModeKeys.TRAIN))
        if epoch * self.steps_per_epoch + step != self.start_step:  # a bug, not a user's mistake: crash
            raise RuntimeError(f"Keras continues at epoch {epoch + 1}, step {step + 1}, but the training stream "
                               f"starts at global step {self.start_step + 1}: the resumed run would not see the "
                               "batches the uninterrupted run saw.")
        if epoch > 0 or step > 0:
            if self.goodput is not None:  # recorded before it is said: the fault soak counts the lines
                self.goodput.resumed(self.start_step)
            self.resumed_from_epoch, self.resumed_from_step = epoch, step
            self.rows = self._read_rows(epoch)
            if epoch >= self.params.get("epochs", epoch + 1) and 0 < len(self.rows) < epoch:
                # Early stopping ended training: the backup of its last epoch says "all epochs done".
                self.resumed_from_epoch = len(self.rows)
                logging.info("Resumed from the backup in %s: early stopping had ended training after epoch %d; "
                             "nothing is left to train.", os.path.dirname(self.path), len(self.rows))
                return
            logging.info("Resumed from the backup in %s: continuing at epoch %d, step %d of %d (%s)%s.",
                         os.path.dirname(self.path), epoch + 1, step + 1, self.steps_per_epoch,
                         f"epochs 1-{epoch} were done" if epoch else "within the first epoch", self.note)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def _read_rows(self, epochs_done):
        try:
            if not tf.io.gfile.exists(self.path):
                return []
            with tf.io.gfile.GFile(self.path) as f:
                return [row for row in json.load(f) if row["epoch"] <= epochs_done]
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as error:
            logging.warning("The history beside the backup (%s) is unreadable (%s): metrics.json will list only "
                            "the epochs from here on.", self.path, type(error).__name__)
            return []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_started, 3)}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        self.rows.append(row)
        self.epochs_this_run += 1

    def save(self):
        """history.json, once the backup of the epoch's end is saved (callback_state.EpochEnd)."""
        if self.write:
            with failed_write(os.path.dirname(self.path), "the history"):
                write_json(self.path, self.rows)
