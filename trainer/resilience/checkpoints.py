"""The preemption backup: Keras's `BackupAndRestore` state in --checkpoint_dir, checked before it is trusted.

- Stopped politely (SIGTERM, SIGINT): `Backup` saves the training state of the step in progress and stops `fit`.
- Killed: a rerun restores the newest backup and resumes there (`resume_step` says where the stream starts).
- Damaged (files lost or truncated, an index naming a missing checkpoint, an unreadable history): `prepare_restore`
  (restore.py) leaves only the newest intact checkpoint, or none, with one WARNING that says why; a storage error
  is retried, then "retry me" with everything kept.
- A save that fails (a full disk, a quota, a failed write): one line naming the folder and the cause, exit 75,
  the last good backup kept (TensorFlow writes a checkpoint beside the old one and indexes it last).
- After the result is published (never before), `discard` deletes the backup behind a tombstone, so that a
  clean-up cut short is finished by the next run instead of being trusted.
"""

import os
import signal
import time
import uuid

import tensorflow as tf
import tf_keras
from absl import logging

from trainer import storage
from trainer.errors import RETRY, RetryableError, UserError
from trainer.storage.files import STORAGE_ERRORS, failed_write
from trainer.resilience.agreement import StopAgreement
from trainer.resilience.restore import (CHECKPOINTS, TOMBSTONE, checkpoint_problem, discard,  # noqa: F401
                                        prepare_restore, resume_step)
from trainer.resilience.signals import PROCESS, Training



class Stopped(RetryableError):
    """SIGTERM or SIGINT ended the run; a rerun of the same command resumes from the backup."""


def check_location(path):
    """The backup is written through TensorFlow's file systems: prove they can write there before training.

    The probe goes into the folder if it exists, else into its nearest existing parent, so that a run stopped
    before its first backup leaves no empty folder behind (and workers probing at once do not race on one).
    """
    directory = path.rstrip("/")
    if not storage.is_gcs(directory):
        while directory and not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)
    probe = f"{directory}/.write-test-{uuid.uuid4().hex}"
    try:
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        hint = (" TensorFlow's gs:// ignores STORAGE_EMULATOR_HOST: with an emulator, pass a local --checkpoint_dir."
                if storage.is_gcs(path) and os.environ.get("STORAGE_EMULATOR_HOST") else "")
        raise UserError(f"cannot write the preemption backup to --checkpoint_dir={path} "
                        f"({type(error).__name__}); choose a writable folder or gs:// prefix.{hint}") from None


# ---- saving ------------------------------------------------------------------------------------------------------

class Backup(tf_keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` once per epoch, or every N steps, that also saves the step in progress when SIGTERM or
    SIGINT arrives, then stops the run.

    It always saves with step granularity (so that Keras resumes mid-epoch), records the step it saves (Keras
    would record the first step of an execution, and assigns a TF variable at every step to do so: 40% of an MLP
    step at batch 32), uses no per-step hook in one process unless the backups are more frequent than the epochs (a
    stop request then ends `fit` through `stop_training`, and the step reached is read off Keras's step counter),
    and keeps the backup after `fit` (the run discards it once the result is published). Under many workers a save
    is a collective and every worker must run the same steps: after every execution the workers agree whether any
    of them was signalled (agreement.StopAgreement), and all save that step and stop together. On Google Cloud,
    tf-keras's `save_before_preemption` also watches for maintenance events (docs/distributed.md). `signals` is the
    process's StopSignals.
    """

    def __init__(self, backup_dir, every_steps, steps_per_epoch, steps_per_execution, multi_worker,
                 signals=PROCESS):
        executions_per_epoch = -(-steps_per_epoch // steps_per_execution)  # Keras calls back once per execution
        save_freq = executions_per_epoch if every_steps is None else max(1, every_steps // steps_per_execution)
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False,
                         save_before_preemption=multi_worker)
        self.every_step_saves = save_freq < executions_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.multi_worker = multi_worker
        self.signals = signals
        self.agreement = None  # many workers: StopAgreement, once the model's strategy is known
        self._agreed = None    # many workers: the signal they agreed to stop on
        self._previous_handlers = {}
        self._periodic = True      # False while Keras's periodic save is at an epoch's last step
        self.backup_seconds = 0.0  # time spent saving (metrics.json's goodput)
        self._saved_epoch_end = None
        self.last_saved_step = None
        self.last_saved_at = None  # wall-clock time of this process's last save (the metrics endpoint's backup age)

    def _implements_train_batch_hooks(self):
        return self.every_step_saves or self.multi_worker

    def on_train_begin(self, logs=None):
        try:  # Keras's restore: a storage error there would otherwise read as "no backup, start afresh"
            super().on_train_begin(logs)
        except STORAGE_ERRORS as error:
            raise RetryableError(f"cannot restore the backup in {self.backup_dir} ({type(error).__name__}): the storage "
                          "failed for now; the backup is kept: rerun the same command.") from None
        handler = getattr(self.model, "_preemption_handler", None)
        if handler is not None:  # tf-keras enabled save_before_preemption (on Google Cloud): exit as "retry me"
            handler._exit_fn = lambda: os._exit(RETRY)
        if not self.signals.watching:  # called in-process (tests): plain handlers in the main thread
            self._previous_handlers = self.signals.install_handlers()
        if self.multi_worker:
            self.agreement = StopAgreement(self.model.distribute_strategy)
        self.signals.start_training(Training(self._request_stop, where=f"the last backup in {self.backup_dir}"))

    def _request_stop(self):
        if not self.multi_worker:  # many workers stop where they agree to (`_agreed_stop`), never alone
            self.model.stop_training = True  # `fit` ends after the step in progress

    def _agreed_stop(self, final=False):
        """The signal that stops training now, or None: this process's own, or, under many workers, the one any
        worker received (every worker asks at the same steps, `final`: at the end of training)."""
        if self.multi_worker:
            self._agreed = self.agreement.agree(self.signals.requested, final=final) or self._agreed
            return self._agreed
        return self.signals.requested

    def on_train_end(self, logs=None):
        signum = self._agreed_stop(final=True)
        if self.agreement is not None:
            logging.debug("The workers voted %d times on stopping, at the end every %d executions.",
                          self.agreement.votes, self.agreement.interval)
        if signum is not None:  # the request ended `fit` between two epochs, or came after the last step
            if self._saved_epoch_end == self._current_epoch:  # that epoch's end is saved (with its callbacks')
                self._stop(self._current_epoch, self.steps_per_epoch - 1, signum, save=False)
            self._stop_where_training_is(self._current_epoch, signum)
        late = self._end()
        if self.multi_worker:  # one more vote, so that every worker stops on a request the last one missed
            late = self.agreement.agree(late, final=True)
        super().on_train_end(logs)
        if late is not None:  # landed in the last vote or after it: `fit` ended at its last epoch's end, saved
            self._stop(self._current_epoch, self.steps_per_epoch - 1, late, save=False)

    def _end(self):
        """Training is over: the signals exit at once from now on. Returns a stop request `fit` never acted on."""
        late = self.signals.end_training()
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers = {}
        return late

    def on_train_batch_begin(self, batch, logs=None):
        """Nothing: `_backup` records the step it saves."""

    def on_train_batch_end(self, batch, logs=None):
        last = batch >= self.steps_per_epoch - 1  # an epoch's last step is saved at its end (save_epoch_end)
        if self.every_step_saves:
            self._periodic = not last
            super().on_train_batch_end(batch, logs)
            self._periodic = True
        signum = self._agreed_stop()
        if signum is not None and not last:
            self._stop(self._current_epoch, batch, signum)

    def on_epoch_end(self, epoch, logs=None):
        if not self.multi_worker and self.signals.requested is not None and not self.epoch_complete(epoch):
            self._stop_where_training_is(epoch, self.signals.requested)  # `fit` left the epoch early

    def epoch_complete(self, epoch):
        return int(self.model._train_counter.numpy()) >= (epoch + 1) * self.steps_per_epoch

    def save_epoch_end(self, epoch, training_ends=False):
        """Saves the training state of `epoch`'s end; called by callback_state.EpochEnd, last of the callbacks,
        so that their state of the epoch is saved with it. `training_ends` (early stopping ended `fit`): saved as
        the last epoch's end, so that a rerun trains no further."""
        self._backup(self.params["epochs"] - 1 if training_ends else epoch, self.steps_per_epoch - 1)
        self._saved_epoch_end = epoch

    def stop_if_requested(self, epoch):
        """Stops at `epoch`'s end, saved by save_epoch_end, if SIGTERM/SIGINT asked (many workers: if they agreed
        on a stop at the epoch's last step)."""
        signum = self._agreed if self.multi_worker else self.signals.requested
        if signum is not None:
            self._stop(epoch, self.steps_per_epoch - 1, signum, save=False)

    def _stop_where_training_is(self, epoch, signum):
        """Stops at the step Keras's step counter has reached in `epoch` (the counter is part of the backup)."""
        steps = self.steps_per_epoch
        done = int(self.model._train_counter.numpy()) - epoch * steps
        if done >= steps:
            self._stop(epoch, steps - 1, signum)
        if done > 0:
            self._stop(epoch, done - 1, signum)
        if epoch > 0:
            self._stop(epoch - 1, steps - 1, signum)
        self._stop(None, None, signum)

    def _backup(self, epoch, batch=0):
        if not self._periodic:  # Keras's periodic save at an epoch's last step: save_epoch_end saves it
            return
        if self._agreed is not None or (not self.multi_worker and self.signals.requested is not None):
            self.signals.saving()  # a save of the agreed stop: the deadline may not cut it
        started = time.perf_counter()
        self._training_state._ckpt_saved_epoch.assign(epoch)
        self._training_state._ckpt_saved_batch.assign(batch)
        with failed_write(self.backup_dir, "the backup"):
            super()._backup(epoch, batch)
        self.backup_seconds += time.perf_counter() - started
        self.last_saved_step = epoch * self.steps_per_epoch + batch + 1  # the global step a rerun resumes at
        self.last_saved_at = time.time()

    def _stop(self, epoch, step, signum, save=True):
        """Saves the training state at (epoch, step) (0-based; None: nothing done yet) and stops the run."""
        name = signal.Signals(signum).name
        by = name if self.signals.requested is not None or not self.multi_worker else f"{name} to another worker"
        self.signals.saving()  # the deadline guards the agreement, never the save it agreed on
        if epoch is not None and save:
            self._backup(epoch, step)
        self._end()
        where = (f"epoch {epoch + 1}, step {step + 1} of {self.steps_per_epoch}" if epoch is not None
                 else "before its first step")
        logging.info("Stopped by %s: saved the backup at %s in %s.", by, where, self.backup_dir)
        raise Stopped(f"stopped by {by} at {where}; the backup is saved in {self.backup_dir}: rerun the same "
                      f"command{' on every worker' if self.multi_worker else ''} to resume.")
