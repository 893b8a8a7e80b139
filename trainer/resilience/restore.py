"""Restoring the preemption backup: only a checkpoint whose own bytes say it is damaged is ever set aside.

A storage error while reading the backup (unavailable, deadline, 429/5xx, a permission flap, a full disk's
side effects) proves nothing about the backup: the read is retried with backoff (files.Retry) and then the run
ends with 75, every file kept. A checkpoint is damaged only when the listing shows a file of it missing, or its
bytes fail to parse or to match their checksum (DAMAGE). Under many workers the chief alone repairs, while the
others wait for its verdict (`chief_verdict`, a collective), so one worker's hiccup never rolls the index back
under the others.
"""

import os

import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

from trainer import storage
from trainer.errors import RetryableError
from trainer.resilience.agreement import summed_over_workers
from trainer.storage.files import STORAGE_ERRORS, Retry, remove, remove_if_empty
from trainer.resilience.history import HISTORY_FILE

TOMBSTONE = "DISCARDING"     # written before a finished run's backup is deleted: what is left is not to be trusted
CHECKPOINTS = "chief"        # the folder Keras's BackupAndRestore keeps its checkpoints in
STATE_FILE = "checkpoint"    # TensorFlow's index of the checkpoints in a folder (a text proto)
# What a checkpoint's own bytes say when they are damaged (TensorFlow 2.21's messages: a truncated or flipped data
# file, a short or garbled index). Anything else is the storage's, not the backup's.
DAMAGE = ("Checksum does not match", "too short to be an sstable", "Read less bytes than requested", "corrupt",
          "bad magic number", "not an sstable", "Data loss", "truncated", "Bad table", "Invalid argument: Bad")
RETRY = Retry()


class Damaged(Exception):
    """A checkpoint's own bytes, or the listing, prove it cannot be restored."""


def prepare_restore(checkpoint_dir, retry=RETRY):
    """Leaves in `checkpoint_dir` only a backup that restores: the newest intact checkpoint, or none.

    Run by the chief alone (or the single process); the reads are retried (`retry`), and a storage failure that
    outlasts them is a RetryableError that changes nothing.
    """
    directory = checkpoint_dir.rstrip("/")
    checkpoints = f"{directory}/{CHECKPOINTS}"
    if retry(lambda: tf.io.gfile.exists(f"{directory}/{TOMBSTONE}"), checkpoint_dir):
        logging.warning("The backup in %s belongs to a run that finished (its clean-up was cut short): "
                        "discarding it and starting over.", checkpoint_dir)
        discard(checkpoint_dir)
        return
    verdict = retry(lambda: inspect(checkpoints), checkpoint_dir)
    if verdict is None:
        return
    keep, problem, indexed = verdict
    if keep is None:
        logging.warning("The backup in %s cannot be restored (%s): starting over from epoch 1.", checkpoints,
                        problem)
        remove(checkpoints)
        remove(f"{directory}/{HISTORY_FILE}")
    elif not indexed:
        logging.warning("The newest backup in %s cannot be restored (%s): resuming from %s instead.",
                        checkpoints, problem or "its index is damaged", os.path.basename(keep))
        tf.compat.v1.train.update_checkpoint_state(checkpoints, keep, all_model_checkpoint_paths=[keep])


def inspect(checkpoints):
    """Reads only: None (nothing to restore, or the newest checkpoint is intact and indexed), else (the newest
    intact checkpoint or None, the newest one's damage, whether the index already names it)."""
    if not tf.io.gfile.isdir(checkpoints):
        return None
    try:
        state = read_state(checkpoints)
        listed = list(state.all_model_checkpoint_paths) if state else []
    except Damaged as error:  # a state file that no longer parses: read around it
        logging.debug("unreadable checkpoint state in %s: %s", checkpoints, error)
        listed, state = [], None
    files = tf.io.gfile.listdir(checkpoints)
    on_disk = sorted({name.split(".")[0] for name in files if name.startswith("ckpt-")},
                     key=lambda name: int(name.split("-")[1]) if name.split("-")[1].isdigit() else -1)
    candidates = list(dict.fromkeys([*reversed(listed), *(f"{checkpoints}/{n}" for n in reversed(on_disk))]))
    newest_problem = None
    for path in candidates:
        problem = checkpoint_problem(path, files)
        if problem is None:
            indexed = state is not None and path == state.model_checkpoint_path
            return None if indexed and newest_problem is None else (path, newest_problem, indexed)
        newest_problem = newest_problem or problem
    return None if not candidates else (None, newest_problem, False)


def read_state(checkpoints):
    """TensorFlow's CheckpointState of the folder, or None without one; Damaged when it does not parse. Unlike
    tf.train.get_checkpoint_state, a storage error is raised, not taken for "no checkpoint"."""
    path = f"{checkpoints}/{STATE_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    text = tf.io.gfile.GFile(path).read()
    state = CheckpointState()
    try:
        text_format.Merge(text, state)
    except text_format.ParseError as error:
        raise Damaged(str(error)) from None
    if not state.model_checkpoint_path:
        return None
    absolute = lambda p: p if storage.is_gcs(p) or os.path.isabs(p) else f"{checkpoints}/{p}"  # noqa: E731
    state.model_checkpoint_path = absolute(state.model_checkpoint_path)
    state.all_model_checkpoint_paths[:] = [absolute(p) for p in state.all_model_checkpoint_paths]
    return state


def checkpoint_problem(path, files=None):
    """None when every tensor of the checkpoint at `path` reads back, else the damage that proves it cannot be
    restored; a storage error is raised (the caller retries it). `files`: the folder's listing, if read."""
    if files is None:
        files = tf.io.gfile.listdir(os.path.dirname(path))
    name = os.path.basename(path)
    if f"{name}.index" not in files:
        return f"{name}.index is missing"
    shards = [f for f in files if f.startswith(f"{name}.data-")]
    count = int(shards[0].rsplit("-of-", 1)[1]) if shards and "-of-" in shards[0] else 0
    missing = [f"{name}.data-{i:05d}-of-{count:05d}" for i in range(count)
               if f"{name}.data-{i:05d}-of-{count:05d}" not in files]
    if not shards or missing:
        return f"{missing[0] if missing else name + '.data-*'} is missing"
    try:
        reader = tf.train.load_checkpoint(path)
        for tensor in reader.get_variable_to_shape_map():
            reader.get_tensor(tensor)
        return None
    except (IndexError, *STORAGE_ERRORS) as error:
        text = str(error).strip()
        if isinstance(error, (tf.errors.DataLossError, IndexError)) or any(word in text for word in DAMAGE):
            return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
        raise


def resume_step(checkpoint_dir, steps_per_epoch, retry=RETRY):
    """The global step a run restored from `checkpoint_dir` continues at (0 without a backup).

    Read before `fit`, so that the training stream can start there (data.train_dataset); the rule is Keras's
    (`maybe_load_initial_counters_from_ckpt`, step-granular saves), and EpochHistory checks that Keras agrees.
    """
    def read():
        state = read_state(f"{checkpoint_dir.rstrip('/')}/{CHECKPOINTS}")
        if state is None:
            return 0
        reader = tf.train.load_checkpoint(state.model_checkpoint_path)
        epoch, batch = (int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                        for name in ("ckpt_saved_epoch", "ckpt_saved_batch"))
        return 0 if epoch < 0 or batch < 0 else epoch * steps_per_epoch + batch + 1
    try:
        return retry(read, checkpoint_dir)
    except Damaged:
        return 0


def chief_verdict(strategy, chief, ok):
    """Every worker of a MultiWorkerMirroredStrategy waits here until the chief has prepared the backup; True when
    it succeeded (only the chief's `ok` counts). A collective: the same call on every worker."""
    local = tf.constant(1.0 if chief and ok else (-1e6 if chief else 0.0))
    return float(summed_over_workers(strategy)(local).numpy()) > 0


def refused_by_chief(checkpoint_dir):
    return RetryableError(f"the chief could not prepare the backup in {checkpoint_dir} (its log says why): nothing "
                          "was changed; rerun every worker with the same flags.")


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
            remove(f"{directory}/{name}")
    remove(f"{directory}/{TOMBSTONE}")
    remove_if_empty(directory)
