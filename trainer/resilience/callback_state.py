"""The state of the stateful Keras callbacks a run uses, kept beside the backup: a resumed run goes on as the run
never stopped would.

Keras's backup holds the training state (weights, optimizer, epoch and step) but no callback's. EarlyStopping is
the one the trainer uses that carries state from epoch to epoch: its best value, the epochs waited since, the best
epoch and its weights, the epoch it stopped at. Without them a resumed run counts its patience from zero and keeps
the weights of an epoch after the restart (seen: stopped at epoch 9 keeping epoch 7, where the run never stopped
stops at 5 keeping 3). The others have none that outlives an epoch: TensorBoard writes its epoch summaries under
the epoch's number, the progress bar and EpochHistory's rows are per epoch (the rows are kept in history.json).

The state changes only at an epoch's end, so it is saved once per epoch, after every callback has taken the epoch
in and before the training state of that epoch's end is saved (`EpochEnd`, last in the callback list): a backup of
any step in epoch E+1 goes with the state saved after epoch E. One file per epoch count
(`callbacks/after-epoch-E.npz`), written atomically, the older ones removed once a newer backup is saved.
"""

import io
import json

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from trainer.storage.files import failed_write, remove

FOLDER = "callbacks"
# The attributes that carry a callback's state from one epoch to the next, per class (tf-keras 2.21).
STATEFUL = {
    tf_keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
}


def stateful(callbacks):
    """{name: callback} of the callbacks whose state the backup keeps, named by class (and position if repeated)."""
    found = {}
    for callback in callbacks:
        if type(callback) in STATEFUL or any(isinstance(callback, kind) for kind in STATEFUL):
            name = type(callback).__name__
            found[name if name not in found else f"{name}-{len(found)}"] = callback
    return found


def attributes(callback):
    return next(names for kind, names in STATEFUL.items() if isinstance(callback, kind))


class CallbackState:
    """The stateful callbacks of one run (`callbacks`: {name: callback}) and their files in `folder`."""

    def __init__(self, folder, callbacks, write):
        self.folder, self.callbacks, self.write = folder.rstrip("/"), callbacks, write

    def path(self, epochs_done):
        return f"{self.folder}/after-epoch-{epochs_done}.npz"

    def save(self, epochs_done):
        """The callbacks' state after `epochs_done` epochs (the chief writes; the others compute the same)."""
        if not self.callbacks or not self.write:
            return
        scalars, arrays = {}, {}
        for name, callback in self.callbacks.items():
            scalars[name] = {}
            for attribute in attributes(callback):
                value = getattr(callback, attribute, None)
                if isinstance(value, list):  # weights: one array per variable
                    arrays.update({f"{name}/{attribute}/{i}": np.asarray(w) for i, w in enumerate(value)})
                    scalars[name][attribute] = {"arrays": len(value)}
                else:
                    scalars[name][attribute] = None if value is None else float(value)
        buffer = io.BytesIO()
        np.savez(buffer, state=np.frombuffer(json.dumps(scalars).encode(), dtype=np.uint8), **arrays)
        temporary = f"{self.path(epochs_done)}.tmp"
        with failed_write(self.folder, "the callbacks' state"):
            try:
                tf.io.gfile.makedirs(self.folder)
                with tf.io.gfile.GFile(temporary, "wb") as f:
                    f.write(buffer.getvalue())
                tf.io.gfile.rename(temporary, self.path(epochs_done), overwrite=True)
            except (tf.errors.OpError, OSError):
                remove(temporary)
                raise

    def restore(self, epochs_done):
        """Puts back the state saved after `epochs_done` epochs; returns the {name: {attribute: value}} restored
        (without the weights), or None when there is none to restore."""
        if not self.callbacks or not epochs_done:
            return None
        path = self.path(epochs_done)
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                saved = np.load(io.BytesIO(f.read()))
                scalars = json.loads(saved["state"].tobytes().decode())
                arrays = {key: saved[key] for key in saved.files if key != "state"}
        except (tf.errors.OpError, OSError, ValueError, KeyError) as error:
            logging.warning("The state of %s after epoch %d is missing or unreadable beside the backup (%s: %s): "
                            "they start afresh, so early stopping counts its patience from here.",
                            ", ".join(self.callbacks), epochs_done, type(error).__name__, path)
            return None
        for name, callback in self.callbacks.items():
            for attribute, value in scalars.get(name, {}).items():
                if isinstance(value, dict):
                    value = [arrays[f"{name}/{attribute}/{i}"] for i in range(value["arrays"])]
                elif value is not None and attribute in ("wait", "stopped_epoch", "best_epoch"):
                    value = int(value)
                setattr(callback, attribute, value)
        return scalars

    def prune(self, epochs_done):
        """Removes the files of fewer epochs than `epochs_done`: the newest backup no longer needs them."""
        if not self.write or not tf.io.gfile.isdir(self.folder):
            return
        for name in tf.io.gfile.listdir(self.folder):
            count = name[len("after-epoch-"):-len(".npz")]
            if name.startswith("after-epoch-") and name.endswith(".npz") and count.isdigit() \
                    and int(count) < epochs_done:
                remove(f"{self.folder}/{name}")


class EpochEnd(tf_keras.callbacks.Callback):
    """Last in the callback list: the backup's part that must come after every other callback.

    At an epoch's end the others have taken the epoch in (EpochHistory its row, EarlyStopping its verdict), so it
    saves their state, then the training state of the epoch's end (checkpoints.Backup.save_epoch_end), then the
    history, and stops there if SIGTERM or SIGINT asked. When starting, it puts the saved state back after the
    callbacks' own `on_train_begin` reset it.
    """

    def __init__(self, backup, history, state, steps_per_epoch, start_step):
        super().__init__()
        self.backup, self.history, self.state = backup, history, state
        self.steps_per_epoch, self.start_step = steps_per_epoch, start_step

    def on_train_begin(self, logs=None):
        self.state.restore(self.start_step // self.steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self.backup.epoch_complete(epoch):  # stopped mid-epoch: Backup saved the step and raised
            return
        stopped_early = any(getattr(callback, "stopped_epoch", 0) == epoch > 0
                            for callback in self.state.callbacks.values())
        # Early stopping ended `fit`: the backup says "every epoch done", and the state goes with that count.
        epochs_done = self.params["epochs"] if stopped_early else epoch + 1
        self.state.save(epochs_done)
        self.backup.save_epoch_end(epoch, training_ends=stopped_early)
        self.history.save()  # after the backup: an epoch in history.json is an epoch in the backup
        self.state.prune(epochs_done)
        self.backup.stop_if_requested(epoch)
