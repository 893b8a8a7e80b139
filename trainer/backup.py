"""The preemption backup: Keras's `BackupAndRestore` state plus the per-epoch history, in --checkpoint_dir.

What a cluster does to a job, and what this module makes of it:
- Killed (SIGKILL, node lost): a rerun of the same command restores the newest backup and resumes there.
- Stopped politely (SIGTERM, SIGINT; Kubernetes eviction, spot reclaim, Vertex AI): the step in progress ends, the
  training state of that step is saved, and the process exits with the contract's "retry me" status.
- A damaged backup (files lost or truncated, an index naming a missing checkpoint, an unreadable history): the
  rerun resumes from the newest intact checkpoint, or starts over, with one WARNING that says why.
- Two instances of the same job at once (a duplicate pod, a rerun while the old process still finishes): a lease
  in the backup folder turns the second away while the first is alive; a dead instance's lease expires.
- After the result is published (never before), the backup is discarded behind a tombstone, so that a clean-up
  cut short is finished by the next run instead of being trusted.
"""

import json
import os
import signal
import socket
import threading
import time
import uuid

import tensorflow as tf
import tf_keras
from absl import logging
from tf_keras.src.utils.mode_keys import ModeKeys

from trainer import signals
from trainer.errors import RETRY, RetryableError, UserError

HISTORY_FILE = "history.json"
TOMBSTONE = "DISCARDING"     # written before a finished run's backup is deleted: what is left is not to be trusted
CHECKPOINTS = "chief"        # the folder Keras's BackupAndRestore keeps its checkpoints in
LEASE_SECONDS = 30.0         # a lease not renewed for this long belongs to a dead instance
LEASE_RENEW_SECONDS = 10.0


class Stopped(RetryableError):
    """SIGTERM or SIGINT ended the run; a rerun of the same command resumes from the backup."""


def check_location(path):
    """The backup is written through TensorFlow's file systems: prove they can write there before training.

    The probe goes into the folder if it exists, else into its nearest existing parent, so that a run stopped
    before its first backup leaves no empty folder behind (and workers probing at once do not race on one).
    """
    directory = path.rstrip("/")
    if not directory.startswith("gs://"):
        while directory and not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)
    probe = f"{directory}/.write-test-{uuid.uuid4().hex}"
    try:
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        hint = (" TensorFlow's gs:// ignores STORAGE_EMULATOR_HOST: with an emulator, pass a local --checkpoint_dir."
                if path.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST") else "")
        raise UserError(f"cannot write the preemption backup to --checkpoint_dir={path} "
                        f"({type(error).__name__}); choose a writable folder or gs:// prefix.{hint}") from None


def remove_if_empty(directory):
    """Removes a local folder only if it is empty, atomically (another worker may be writing into it); object
    stores have no folders to remove."""
    if not directory.startswith("gs://"):
        try:
            os.rmdir(directory)
        except OSError:
            pass


# ---- restoring ---------------------------------------------------------------------------------------------------

def prepare_restore(checkpoint_dir):
    """Leaves in `checkpoint_dir` only a backup that restores: the newest intact checkpoint, or none.

    Every worker runs this on the same shared folder and reaches the same verdict; its changes are idempotent.
    """
    directory = checkpoint_dir.rstrip("/")
    checkpoints = f"{directory}/{CHECKPOINTS}"
    if tf.io.gfile.exists(f"{directory}/{TOMBSTONE}"):
        logging.warning("The backup in %s belongs to a run that finished (its clean-up was cut short): "
                        "discarding it and starting over.", checkpoint_dir)
        discard(checkpoint_dir)
        return
    if not tf.io.gfile.isdir(checkpoints):
        return
    try:
        state = tf.train.get_checkpoint_state(checkpoints)
        listed = list(state.all_model_checkpoint_paths) if state else []
    except Exception as error:  # a damaged state file: a text proto that no longer parses
        listed, state = [], None
        logging.debug("unreadable checkpoint state in %s: %s", checkpoints, error)
    on_disk = sorted({name.split(".")[0] for name in tf.io.gfile.listdir(checkpoints) if name.startswith("ckpt-")},
                     key=lambda name: int(name.split("-")[1]) if name.split("-")[1].isdigit() else -1)
    candidates = list(dict.fromkeys([*reversed(listed), *(f"{checkpoints}/{n}" for n in reversed(on_disk))]))
    if not candidates:
        return
    newest_problem = None
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if state is None or path != state.model_checkpoint_path:
                logging.warning("The newest backup in %s cannot be restored (%s): resuming from %s instead.",
                                checkpoints, newest_problem or "its index is damaged", os.path.basename(path))
                tf.compat.v1.train.update_checkpoint_state(checkpoints, path, all_model_checkpoint_paths=[path])
            return
        newest_problem = newest_problem or problem
    logging.warning("The backup in %s cannot be restored (%s): starting over from epoch 1.", checkpoints,
                    newest_problem)
    _remove(checkpoints)
    _remove(f"{directory}/{HISTORY_FILE}")


def resume_step(checkpoint_dir, steps_per_epoch):
    """The global step a run restored from `checkpoint_dir` continues at (0 without a backup).

    Read before `fit`, so that the training stream can start there (data.train_dataset); the rule is Keras's
    (`maybe_load_initial_counters_from_ckpt`, step-granular saves), and EpochHistory checks that Keras agrees.
    """
    latest = tf.train.latest_checkpoint(f"{checkpoint_dir.rstrip('/')}/{CHECKPOINTS}")
    if latest is None:
        return 0
    reader = tf.train.load_checkpoint(latest)
    epoch, batch = (int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                    for name in ("ckpt_saved_epoch", "ckpt_saved_batch"))
    if epoch < 0 or batch < 0:
        return 0
    return epoch * steps_per_epoch + batch + 1


def checkpoint_problem(path):
    """None when every tensor of the checkpoint at `path` reads back, else what is wrong with it."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        return None
    except Exception as error:  # NotFound, DataLoss, OutOfRange...: every way a checkpoint can be damaged
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"


def discard(checkpoint_dir):
    """Deletes a finished run's backup: the tombstone first, so that a deletion cut short is never trusted."""
    directory = checkpoint_dir.rstrip("/")
    if not tf.io.gfile.isdir(directory):
        return
    with tf.io.gfile.GFile(f"{directory}/{TOMBSTONE}", "w") as f:
        f.write("this backup belongs to a finished run\n")
    for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        if name != TOMBSTONE and not name.startswith(".lease"):
            _remove(f"{directory}/{name}")
    _remove(f"{directory}/{TOMBSTONE}")
    remove_if_empty(directory)


def _write_json(path, value):
    """Writes `value` to `path` through TensorFlow's file systems so that a reader never sees half of it: a
    temporary file of this process's own, then a rename over the old one."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as f:
        json.dump(value, f)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _remove(path):
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


# ---- the callbacks -----------------------------------------------------------------------------------------------

def callbacks(checkpoint_dir, chief, backup_every_steps, steps_per_epoch, steps_per_execution, multi_worker,
              start_step=0):
    """Keras's backup of the training state (saving on SIGTERM/SIGINT too), and the history that goes with it.

    `start_step`: the global step the training stream starts at (resume_step); Keras must continue there too.
    """
    history = EpochHistory(os.path.join(checkpoint_dir, HISTORY_FILE), write=chief,
                           steps_per_epoch=steps_per_epoch, start_step=start_step)
    backup = Backup(checkpoint_dir, every_steps=backup_every_steps, steps_per_epoch=steps_per_epoch,
                    steps_per_execution=steps_per_execution, multi_worker=multi_worker)
    return [backup, history], history


class Backup(tf_keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` once per epoch, or every N steps, that also saves the step in progress when SIGTERM or
    SIGINT arrives, then stops the run.

    It always saves with step granularity (so that Keras resumes mid-epoch), records the step it saves (Keras
    would record the first step of an execution, and assigns a TF variable at every step to do so: 40% of an MLP
    step at batch 32), uses no per-step hook unless the backups are more frequent than the epochs (a stop request
    then ends `fit` through `stop_training`, and the step reached is read off Keras's step counter), and keeps the
    backup after `fit` (the run discards it once the result is published). Under many workers a save is a
    collective: a worker that receives a signal alone cannot save, so it stops at once and the others follow when
    they lose it; on Google Cloud, tf-keras's `save_before_preemption` coordinates a save on all workers instead
    (docs/distributed.md).
    """

    def __init__(self, backup_dir, every_steps, steps_per_epoch, steps_per_execution, multi_worker):
        executions_per_epoch = -(-steps_per_epoch // steps_per_execution)  # Keras calls back once per execution
        save_freq = executions_per_epoch if every_steps is None else max(1, every_steps // steps_per_execution)
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False,
                         save_before_preemption=multi_worker)
        self.every_step_saves = save_freq < executions_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.multi_worker = multi_worker
        self._previous_handlers = {}

    def _implements_train_batch_hooks(self):
        return self.every_step_saves

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        handler = getattr(self.model, "_preemption_handler", None)
        if handler is not None:  # tf-keras enabled save_before_preemption (on Google Cloud): exit as "retry me"
            handler._exit_fn = lambda: os._exit(RETRY)
        if not signals.watching():  # called in-process (tests): plain handlers in the main thread
            self._previous_handlers = signals.install_handlers()
        signals.training(True, stop=self._request_stop, alone=not self.multi_worker,
                         where=f"the last backup in {self.backup_dir}")

    def _request_stop(self):
        self.model.stop_training = True  # `fit` ends after the step in progress

    def on_train_end(self, logs=None):
        if signals.requested is not None:  # the request ended `fit` between two epochs
            self._stop_where_training_is(self._current_epoch)
        self._end()
        super().on_train_end(logs)

    def _end(self):
        signals.training(False)
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers = {}

    def on_train_batch_begin(self, batch, logs=None):
        """Nothing: `_backup` records the step it saves."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if signals.requested is not None:
            self._stop(self._current_epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if signals.requested is not None:  # `fit` left the epoch early, or the request came during its end
            self._stop_where_training_is(epoch)
        if not self.every_step_saves:
            self._backup(epoch, self.steps_per_epoch - 1)

    def _stop_where_training_is(self, epoch):
        """Stops at the step Keras's step counter has reached in `epoch` (the counter is part of the backup)."""
        steps = self.steps_per_epoch
        done = int(self.model._train_counter.numpy()) - epoch * steps
        if done >= steps:
            self._stop(epoch, steps - 1)
        if done > 0:
            self._stop(epoch, done - 1)
        if epoch > 0:
            self._stop(epoch - 1, steps - 1)
        self._stop(None, None)

    def _backup(self, epoch, batch=0):
        self._training_state._ckpt_saved_epoch.assign(epoch)
        self._training_state._ckpt_saved_batch.assign(batch)
        super()._backup(epoch, batch)

    def _stop(self, epoch, step):
        """Saves the training state at (epoch, step) (0-based; None: nothing done yet) and stops the run."""
        name = signal.Signals(signals.requested).name
        if epoch is not None:
            self._backup(epoch, step)
        self._end()
        where = (f"epoch {epoch + 1}, step {step + 1} of {self.steps_per_epoch}" if epoch is not None
                 else "before its first step")
        logging.info("Stopped by %s: saved the backup at %s in %s.", name, where, self.backup_dir)
        raise Stopped(f"stopped by {name} at {where}; the backup is saved in {self.backup_dir}: rerun the same "
                      "command to resume.")


class EpochHistory(tf_keras.callbacks.Callback):
    """Per-epoch loss, accuracy and time, kept beside the backup so a resumed run still has its whole history.

    It also says, in the log, where a run resumes when it does not start afresh.
    """

    def __init__(self, path, write, steps_per_epoch, start_step=0):
        super().__init__()
        self.path, self.write, self.steps_per_epoch, self.start_step = path, write, steps_per_epoch, start_step
        self.rows, self.resumed_from_epoch, self.resumed_from_step, self.epochs_this_run = [], 0, 0, 0
        self._epoch_started = 0.0

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
            self.resumed_from_epoch, self.resumed_from_step = epoch, step
            self.rows = self._read_rows(epoch)
            logging.info("Resumed from the backup in %s: continuing at epoch %d, step %d of %d (%s).",
                         os.path.dirname(self.path), epoch + 1, step + 1, self.steps_per_epoch,
                         f"epochs 1-{epoch} were done" if epoch else "within the first epoch")

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
        if self.write:
            _write_json(self.path, self.rows)


# ---- one instance at a time ----------------------------------------------------------------------------------------

class Lease:
    """This instance's claim on the backup folder, renewed while it runs; see the module docstring.

    `name` tells the tasks of one job apart (each worker holds its own). On the same host, a lease whose process
    is gone is free at once; elsewhere it expires LEASE_SECONDS after its last renewal.
    """

    def __init__(self, checkpoint_dir, name):
        self.path = f"{checkpoint_dir.rstrip('/')}/.lease-{name}"
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread = None

    def acquire(self):
        held = self._read()
        if held and held.get("owner") != self.record["owner"] and self._alive(held):
            raise RetryableError(
                f"another instance of this job holds the backup in {os.path.dirname(self.path)} (host "
                f"{held.get('host')}, pid {held.get('pid')}): a duplicate pod, or a rerun started before the old "
                f"run ended. Retry once it has stopped; if it died, its lease expires by "
                f"{time.strftime('%H:%M:%S UTC', time.gmtime(held.get('expires', 0)))}.")
        try:
            self._write()
        except tf.errors.OpError as error:
            raise RetryableError(f"cannot write the lease on the backup in {os.path.dirname(self.path)} "
                                 f"({type(error).__name__}): retry.") from None
        if (self._read() or {}).get("owner") != self.record["owner"]:  # another instance wrote at the same moment
            raise RetryableError(f"another instance of this job claimed the backup in "
                                 f"{os.path.dirname(self.path)} at the same moment: retry.")
        self._thread = threading.Thread(target=self._renew, name="backup-lease", daemon=True)
        self._thread.start()
        signals.held_leases.append(self)
        return self

    def release(self):
        self._stop.set()
        if self in signals.held_leases:
            signals.held_leases.remove(self)
        try:
            if (self._read() or {}).get("owner") == self.record["owner"]:
                tf.io.gfile.remove(self.path)
            remove_if_empty(os.path.dirname(self.path))
        except tf.errors.OpError:
            pass

    def _alive(self, held):
        if held.get("host") == self.record["host"]:
            try:
                os.kill(int(held.get("pid")), 0)
            except (ProcessLookupError, ValueError, TypeError):
                return False
            except PermissionError:
                return True
            return held.get("pid") != self.record["pid"]  # this process's own old lease: a run that crashed
        return held.get("expires", 0) > time.time()

    def _read(self):
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.load(f)
        except (tf.errors.OpError, ValueError):
            return None

    def _write(self):
        _write_json(self.path, {**self.record, "expires": time.time() + LEASE_SECONDS})

    def _renew(self):
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                self._write()
            except tf.errors.OpError as error:
                logging.warning("Could not renew the lease on %s: %s", self.path, type(error).__name__)
