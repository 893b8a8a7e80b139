"""Writing and removing the backup's files through TensorFlow's file systems (local paths and gs:// alike), and
what a storage failure there means for the exit-code contract.

A failed write or read of the backup (a full disk, a quota, a 503, a permission flap) is never a bug and never the
user's flag: it is "retry me" (exit 75) in one line naming the folder and the cause (`failed_write`, `Retry`).
"""

import contextlib
import errno
import json
import os
import time
import uuid

import tensorflow as tf
from absl import logging

from trainer import storage
from trainer.errors import RetryableError

STORAGE_ERRORS = (tf.errors.OpError, OSError)  # what TensorFlow's file systems and the local disk raise


def cause(error):
    """The cause of a storage failure in a few words: a full disk and a quota by name, else the error's first line."""
    text = str(error).strip()
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text:
        return "no space left on device"
    if getattr(error, "errno", None) == errno.EDQUOT or "quota" in text.lower():
        return "quota exceeded"
    first = text.splitlines()[0][:160] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@contextlib.contextmanager
def failed_write(folder, what):
    """A storage error inside becomes RetryableError "could not write `what` in `folder` (cause)"."""
    try:
        yield
    except STORAGE_ERRORS as error:
        raise RetryableError(f"could not write {what} in {folder} ({cause(error)}); the last good backup is kept: "
                             "free space or fix the storage, then rerun the same command.") from None


class Retry:
    """Calls a read of the backup again on a storage error, with backoff (`delays`, seconds); once they are used
    up, RetryableError "cannot read the backup in `folder`": the run ends with 75, nothing deleted."""

    def __init__(self, delays=(1.0, 2.0, 4.0, 8.0)):
        self.delays = tuple(delays)

    def __call__(self, function, folder, what="the backup"):
        for attempt, delay in enumerate((*self.delays, None)):
            try:
                return function()
            except STORAGE_ERRORS as error:
                if delay is None:
                    raise RetryableError(
                        f"cannot read {what} in {folder} ({cause(error)}) after {attempt + 1} tries: the storage "
                        "failed for now; the backup is kept as it is: rerun the same command.") from None
                logging.warning("Reading %s in %s failed (%s): trying again in %g s.", what, folder, cause(error),
                                delay)
                time.sleep(delay)


def write_json(path, value):
    """Writes `value` to `path` so that a reader never sees half of it: a temporary file of this process's own,
    then a rename over the old one."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with tf.io.gfile.GFile(temporary, "w") as f:
            json.dump(value, f)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except STORAGE_ERRORS:
        with contextlib.suppress(*STORAGE_ERRORS):
            remove(temporary)  # a half-written file of this process's own: never left behind
        raise


def remove(path):
    """Removes a file or a folder tree; nothing there is fine."""
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


def remove_if_empty(directory):
    """Removes a local folder only if it is empty, atomically (another worker may be writing into it); object
    stores have no folders to remove."""
    if not storage.is_gcs(directory):
        try:
            os.rmdir(directory)
        except OSError:
            pass
