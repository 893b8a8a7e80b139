"""Restoring the backup through storage faults (in-process, faults injected where TensorFlow reads): a storage
error never deletes a good backup, only a checkpoint's own bytes prove damage, and only the chief repairs."""

import os

import pytest
import tensorflow as tf

from support.backup import latest, saved_backup
from trainer.errors import RetryableError
from trainer.resilience import checkpoints, restore
from trainer.storage.files import Retry
from trainer.resilience.guard import RunGuard

NO_WAIT = Retry(delays=(0, 0))
TRANSIENT = {  # what TensorFlow's gs:// and local file systems raise for a blip
    "unavailable": tf.errors.UnavailableError(None, None, "503 Service Unavailable"),
    "deadline": tf.errors.DeadlineExceededError(None, None, "deadline exceeded"),
    "throttled": tf.errors.ResourceExhaustedError(None, None, "429 Too Many Requests"),
    "permission": tf.errors.OpError(None, None, "/backup/chief/ckpt-3.index; Permission denied", 2),
}


def files_of(directory):
    return sorted(os.listdir(directory / "chief"))


@pytest.fixture
def failing_reads(monkeypatch):
    """Makes the next `times` checkpoint reads raise `error`; returns the count of calls made."""
    calls = []

    def inject(error, times):
        real = tf.train.load_checkpoint

        def load(path):
            calls.append(path)
            if len(calls) <= times:
                raise error
            return real(path)
        monkeypatch.setattr(tf.train, "load_checkpoint", load)
        return calls
    return inject


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_storage_error_that_lasts_keeps_every_file_and_asks_for_a_retry(tmp_path, failing_reads, kind):
    saved_backup(tmp_path)
    (tmp_path / "history.json").write_text("[]")
    before = files_of(tmp_path)
    calls = failing_reads(TRANSIENT[kind], times=100)
    with pytest.raises(RetryableError, match=r"cannot read the backup in .* after 3 tries.*the backup is kept"):
        restore.prepare_restore(str(tmp_path), retry=NO_WAIT)
    assert len(calls) == 3
    assert files_of(tmp_path) == before and (tmp_path / "history.json").exists() and latest(tmp_path) == "ckpt-3"


def test_a_storage_error_that_passes_is_retried_and_the_newest_checkpoint_kept(tmp_path, failing_reads, caplog):
    saved_backup(tmp_path)
    failing_reads(TRANSIENT["unavailable"], times=1)
    restore.prepare_restore(str(tmp_path), retry=NO_WAIT)
    assert latest(tmp_path) == "ckpt-3" and len(files_of(tmp_path)) == 7
    assert "trying again" in caplog.text and "cannot be restored" not in caplog.text


def test_a_checksum_that_does_not_match_is_damage(tmp_path, caplog):
    saved_backup(tmp_path)
    data = tmp_path / "chief" / "ckpt-3.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-8] + b"\xff" * 8)
    restore.prepare_restore(str(tmp_path), retry=NO_WAIT)
    assert latest(tmp_path) == "ckpt-2" and "Checksum does not match" in caplog.text


def test_resume_step_retries_and_then_asks_for_a_retry(tmp_path, failing_reads):
    saved_backup(tmp_path)
    failing_reads(TRANSIENT["unavailable"], times=100)
    with pytest.raises(RetryableError, match="cannot read the backup"):
        restore.resume_step(str(tmp_path), 10, retry=NO_WAIT)


class _Guard(RunGuard):
    def __init__(self, checkpoint_dir, tf_config):  # only what _prepare_restore uses
        self.checkpoint_dir, self.tf_config, self.multi_worker = checkpoint_dir, tf_config, True
        self.strategy = tf.distribute.get_strategy()


@pytest.mark.parametrize("task, repaired", [("chief", True), ("worker", False)])
def test_only_the_chief_repairs_a_damaged_backup(tmp_path, task, repaired):
    saved_backup(tmp_path)
    (tmp_path / "chief" / "ckpt-3.data-00000-of-00001").unlink()
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2"]}
    _Guard(str(tmp_path), {"cluster": cluster, "task": {"type": task, "index": 0}})._prepare_restore()
    assert (latest(tmp_path) == "ckpt-2") == repaired
    assert checkpoints.prepare_restore is restore.prepare_restore  # the name the rest of the job uses
