"""The preemption backup in-process: a damaged backup never crashes a rerun, the lease turns a second instance
away, a finished run's backup is discarded behind a tombstone, publishing that fails for now keeps the backup."""

import gzip
import json
import os
import shutil
import signal
import socket
import time

import pytest
import tensorflow as tf

from support.backup import latest, saved_backup
from support.data import TFDS_MANUAL_DIR, splits, train_in_process
from trainer.config import run_config
from trainer.storage import outputs
from trainer.training import train
from trainer.resilience import checkpoints, history, lease, signals
from trainer.errors import RetryableError, UserError

# They read backups, weights and metrics, never the SavedModel (support/fixtures.py).
pytestmark = pytest.mark.usefixtures("placeholder_saved_model")


def test_an_intact_backup_is_left_as_it_is(tmp_path):
    saved_backup(tmp_path)
    checkpoints.prepare_restore(str(tmp_path))
    assert latest(tmp_path) == "ckpt-3"


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog, damage):
    saved_backup(tmp_path)
    data = tmp_path / "chief" / "ckpt-3.data-00000-of-00001"
    if damage == "delete":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:100])
    checkpoints.prepare_restore(str(tmp_path))
    assert latest(tmp_path) == "ckpt-2"
    assert "cannot be restored" in caplog.text and "resuming from ckpt-2" in caplog.text


def test_an_index_that_names_a_missing_checkpoint_falls_back(tmp_path):
    saved_backup(tmp_path)
    for name in os.listdir(tmp_path / "chief"):
        if name.startswith("ckpt-3"):
            os.remove(tmp_path / "chief" / name)
    checkpoints.prepare_restore(str(tmp_path))
    assert latest(tmp_path) == "ckpt-2"


def test_a_backup_with_nothing_intact_is_removed_and_the_run_starts_over(tmp_path, caplog):
    saved_backup(tmp_path)
    (tmp_path / "history.json").write_text("[{\"epoch\": 1}]")
    for name in os.listdir(tmp_path / "chief"):
        if ".data-" in name:
            os.remove(tmp_path / "chief" / name)
    checkpoints.prepare_restore(str(tmp_path))
    assert not (tmp_path / "chief").exists() and not (tmp_path / "history.json").exists()
    assert "starting over from epoch 1" in caplog.text


def test_a_damaged_state_file_is_read_around(tmp_path):
    saved_backup(tmp_path)
    (tmp_path / "chief" / "checkpoint").write_text("this is not a text proto {{{")
    checkpoints.prepare_restore(str(tmp_path))
    assert latest(tmp_path) == "ckpt-3"


def test_a_tombstone_means_a_finished_runs_backup_whose_clean_up_was_cut_short(tmp_path, caplog):
    saved_backup(tmp_path)
    (tmp_path / checkpoints.TOMBSTONE).write_text("")
    checkpoints.prepare_restore(str(tmp_path))
    assert not tmp_path.exists() or not os.listdir(tmp_path)
    assert "belongs to a run that finished" in caplog.text


def test_discard_leaves_nothing(tmp_path):
    saved_backup(tmp_path / "ckpt")
    checkpoints.discard(str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt").exists()


def test_a_second_instance_is_turned_away_while_the_first_holds_the_lease(tmp_path):
    first = lease.Lease(str(tmp_path), "single").acquire()
    record = json.loads((tmp_path / ".lease-single").read_text())
    assert record["pid"] == os.getpid() and record["expires"] > time.time()
    # Seen from another process on this host (the parent of this one, which is alive):
    (tmp_path / ".lease-single").write_text(json.dumps({**record, "owner": "other", "pid": os.getppid()}))
    with pytest.raises(RetryableError, match="another instance of this job holds the backup"):
        lease.Lease(str(tmp_path), "single").acquire()
    lease.Lease(str(tmp_path), "worker-1").acquire().release()  # another task of the same job is welcome
    first.release()  # not its lease any more: left alone
    assert (tmp_path / ".lease-single").exists()
    (tmp_path / ".lease-single").unlink()
    lease.Lease(str(tmp_path), "single").acquire().release()  # free again; releasing removes the empty folder
    assert not tmp_path.exists()


def test_a_dead_instances_lease_does_not_block_a_rerun(tmp_path):
    def held_by(**record):
        tmp_path.mkdir(exist_ok=True)  # releasing removes the folder once empty
        (tmp_path / ".lease-single").write_text(json.dumps(record))
    # Another host: free once expired. This host: free at once when its process is gone.
    held_by(owner="x", host="elsewhere", pid=1, expires=0)
    lease.Lease(str(tmp_path), "single").acquire().release()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    held_by(owner="y", host=socket.gethostname(), pid=dead, expires=2e9, **lease.whereabouts())
    lease.Lease(str(tmp_path), "single").acquire().release()
    held_by(owner="z", host="elsewhere", pid=1, expires=2e9)
    with pytest.raises(RetryableError, match="expires by"):
        lease.Lease(str(tmp_path), "single").acquire()


def test_publishing_that_fails_for_now_keeps_the_backup_and_the_rerun_publishes_without_training(
        fashion, tmp_path, monkeypatch, caplog):
    data = splits(fashion, 600, test_examples=500)
    settings = dict(model="mlp", recipe="seed", epochs=2, checkpoint_dir=str(tmp_path / "ckpt"))

    def unreachable(self, staging, metrics):
        raise ConnectionError("Connection refused")
    monkeypatch.setattr(outputs.LocalOutput, "publish", unreachable)
    with pytest.raises(RetryableError, match="the backup is kept"):
        train_in_process(tmp_path / "out", data, **settings)
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert (tmp_path / "ckpt" / "chief").is_dir()
    monkeypatch.undo()
    caplog.clear()
    metrics = train_in_process(tmp_path / "out", data, **settings)
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_completed"] == 2
    assert (tmp_path / "out" / "metrics.json").exists() and not (tmp_path / "ckpt").exists()


def test_rerunning_a_finished_command_does_nothing_and_other_settings_are_refused(fashion, tmp_path):
    data = splits(fashion, 300, test_examples=300)
    first = train_in_process(tmp_path, data, model="mlp", recipe="seed", epochs=1)
    assert train_in_process(tmp_path, data, model="mlp", recipe="seed", epochs=1) == first
    with pytest.raises(UserError, match="finished run of other settings"):
        train_in_process(tmp_path, data, model="mlp", recipe="seed", epochs=2)


@pytest.mark.skipif(not TFDS_MANUAL_DIR, reason="needs the four official files in ../shared/datasets")
def test_damaged_data_files_are_a_permanent_error_that_leaves_no_backup_folder(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(TFDS_MANUAL_DIR, manual)
    labels = manual / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    cfg = run_config.make(output_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "tfds"),
                      tfds_manual_dir=str(manual), model="mlp")
    with pytest.raises(UserError, match="fail TFDS's checksum"):
        train.run(cfg)
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert gzip  # the files are gzip archives; truncating one is what a cut-off copy leaves


@pytest.fixture
def sigterm_after_epoch(monkeypatch):
    """SIGTERM, as the signal watcher hands it over, right after the given epoch's end (in-process)."""
    on_epoch_end, after = history.EpochHistory.on_epoch_end, []

    def then_signal(self, index, logs=None):
        on_epoch_end(self, index, logs)
        if after and index + 1 == after[-1]:
            signals.PROCESS.handle(signal.SIGTERM)
    monkeypatch.setattr(history.EpochHistory, "on_epoch_end", then_signal)
    return after.append


@pytest.mark.parametrize("every_steps", [None, 10], ids=["per-epoch", "every-10-steps"])
def test_sigterm_stops_the_run_with_a_backup_and_a_rerun_resumes_there(fashion, tmp_path, sigterm_after_epoch,
                                                                       every_steps):
    data = splits(fashion, 2000, test_examples=500)
    settings = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, backup_every_steps=every_steps)
    sigterm_after_epoch(1)  # as the first epoch ends: `fit` stops before the second
    with pytest.raises(checkpoints.Stopped, match=r"stopped by SIGTERM at epoch 1, step 32 of 32; the backup is saved"):
        train_in_process(tmp_path / "out", data, **settings)
    assert not (tmp_path / "out" / "metrics.json").exists()
    sigterm_after_epoch(0)  # no more signals
    metrics = train_in_process(tmp_path / "out", data, **settings)
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (1, 0)
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]


def test_a_rerun_after_the_backup_lost_its_data_files_starts_over_and_finishes(fashion, tmp_path, caplog,
                                                                              sigterm_after_epoch):
    data = splits(fashion, 2000, test_examples=500)
    settings = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, checkpoint_dir=str(tmp_path / "backup"))
    sigterm_after_epoch(2)
    with pytest.raises(checkpoints.Stopped):
        train_in_process(tmp_path / "out", data, **settings)
    chief = tmp_path / "backup" / "chief"
    data_files = [name for name in os.listdir(chief) if ".data-" in name]
    assert data_files
    for name in data_files:  # what a kill during a clean-up object by object, or lost storage, leaves
        os.remove(chief / name)
    sigterm_after_epoch(0)
    metrics = train_in_process(tmp_path / "out", data, **settings)
    assert "cannot be restored" in caplog.text and "starting over from epoch 1" in caplog.text
    assert metrics["resumed_from_epoch"] == 0 and [row["epoch"] for row in metrics["history"]] == [1, 2, 3]


def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_uninterrupted_runs_weights(fashion, tmp_path,
                                                                                      monkeypatch):
    """The stream restarts at the backup's global step with the same batches and the same augmentation draws, so
    a preempted run is not a different run: its weights are bit-identical to those of a run never stopped."""
    data = splits(fashion, 1000, test_examples=200)
    settings = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, backup_every_steps=5, max_shift=2,
                    horizontal_flip=True)
    uninterrupted = train_in_process(tmp_path / "uninterrupted", data, **settings)

    on_batch_end, calls = checkpoints.Backup.on_train_batch_end, []

    def sigterm_at_the_25th_step(self, batch, logs=None):  # epoch 2 of 3, step 9 of 16
        calls.append(batch)
        if len(calls) == 25:
            signals.PROCESS.handle(signal.SIGTERM)
        on_batch_end(self, batch, logs)
    monkeypatch.setattr(checkpoints.Backup, "on_train_batch_end", sigterm_at_the_25th_step)
    with pytest.raises(checkpoints.Stopped, match="at epoch 2, step 9 of 16"):
        train_in_process(tmp_path / "resumed", data, **settings)
    monkeypatch.setattr(checkpoints.Backup, "on_train_batch_end", on_batch_end)
    resumed = train_in_process(tmp_path / "resumed", data, **settings)

    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (1, 9)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]


def test_the_stream_starts_where_keras_continues(tmp_path):
    """resume_step reads the backup's saved (epoch, batch) with Keras's rule: the step after the one saved."""
    assert checkpoints.resume_step(str(tmp_path), steps_per_epoch=16) == 0  # no backup: from the start
    epoch, batch = tf.Variable(1, dtype=tf.int64), tf.Variable(8, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(ckpt_saved_epoch=epoch, ckpt_saved_batch=batch)
    tf.train.CheckpointManager(checkpoint, f"{tmp_path}/chief", max_to_keep=1).save()
    assert checkpoints.resume_step(str(tmp_path), steps_per_epoch=16) == 16 + 9
    batch.assign(15)  # the last step of epoch 2: the next epoch's first step
    tf.train.CheckpointManager(checkpoint, f"{tmp_path}/chief", max_to_keep=1).save()
    assert checkpoints.resume_step(str(tmp_path), steps_per_epoch=16) == 32
