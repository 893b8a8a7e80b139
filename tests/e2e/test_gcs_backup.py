"""The preemption backup on gs://, written by TensorFlow's own file system as every launcher ships it, against the
local storage emulator through a TLS-terminating proxy (tests/support/gcs_proxy.py): stopped by SIGTERM or
SIGKILL and resumed with the uninterrupted run's weights; the lease, history, goodput and callbacks' state kept
there; a damaged backup there read around; Cloud Storage failing for now (503s) ends the run with 75, all kept."""

import json
import os
import signal
import time

import pytest

from support.data import data_flags
from support.gcs_proxy import tensorflow_gcs
from support.processes import assert_ok, read_metrics, run_trainer, start_trainer, wait_for_line
from trainer import errors

pytestmark = pytest.mark.e2e
BUCKET, BACKUP = "runs", "backup"
# Early stopping (patience larger than the run) makes its state part of the backup: callbacks/after-epoch-N.npz.
RUN = ("--model=mlp", "--recipe=seed", "--batch_size=64", "--train_examples=3000", "--epochs=3",
       "--validation_split=0.1", "--early_stopping_patience=5", *data_flags())


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The proxy, its environment set in this process too (this process reads gs:// through it)."""
    with tensorflow_gcs(str(tmp_path_factory.mktemp("gcs")), bucket=BUCKET) as proxy:
        saved = dict(os.environ)
        os.environ.update(proxy.environ())
        try:
            yield proxy
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="module")
def uninterrupted(gcs, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_trainer(*RUN, f"--output_dir={out}", f"--checkpoint_dir=gs://{BUCKET}/reference",
                         env=gcs.environ(), timeout=600)
    assert_ok(result)
    return read_metrics(out)


def objects(gcs, prefix):
    """{name: blob} of the objects under gs://BUCKET/prefix/, listed with google-cloud-storage."""
    from google.cloud import storage
    bucket = storage.Client(project="test").bucket(BUCKET)
    return {blob.name[len(prefix) + 1:]: blob for blob in bucket.list_blobs(prefix=f"{prefix}/")}


def read(prefix, name):
    """An object's bytes, through TensorFlow's gs:// (the emulator's media links name Google's host)."""
    import tensorflow as tf
    with tf.io.gfile.GFile(f"gs://{BUCKET}/{prefix}/{name}", "rb") as f:
        return f.read()


def stopped_run(gcs, tmp_path, prefix, how):
    out = tmp_path / "out"
    args = (*RUN, f"--output_dir={out}", f"--checkpoint_dir=gs://{BUCKET}/{prefix}")
    log = tmp_path / "first.log"
    first = start_trainer(*args, env=gcs.environ(), log_path=log)
    try:
        wait_for_line(log, "epoch 2/3: ", first)
        if how == "SIGTERM":
            time.sleep(0.3)  # into epoch 3
        first.send_signal(getattr(signal, how))
        status = first.wait(timeout=120)
    finally:
        first.kill()
    assert status == (errors.RETRY if how == "SIGTERM" else -signal.SIGKILL), log.read_text()[-3000:]
    return args, log.read_text()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_run_stopped_with_its_backup_on_gcs_resumes_with_the_uninterrupted_runs_weights(gcs, uninterrupted,
                                                                                           tmp_path, how):
    prefix = f"{BACKUP}-{how.lower()}"
    args, text = stopped_run(gcs, tmp_path, prefix, how)
    assert "Traceback" not in text
    kept = objects(gcs, prefix)
    history = json.loads(read(prefix, "history.json"))
    assert [row["epoch"] for row in history] == [1, 2] or [row["epoch"] for row in history] == [1, 2, 3]
    assert "goodput.json" in kept and any(name.startswith("callbacks/after-epoch-") for name in kept), sorted(kept)
    assert any(name.startswith("chief/ckpt-") and ".data-" in name for name in kept), sorted(kept)
    if how == "SIGTERM":
        assert not any(name.startswith(".lease") for name in kept)  # released on the way out
    rerun = run_trainer(*args, env=gcs.environ(), timeout=600)
    assert_ok(rerun)
    assert "Resumed from the backup in gs://" in rerun.stderr
    metrics = read_metrics(tmp_path / "out")
    assert metrics["weights_sha256"] == uninterrupted["weights_sha256"]
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert metrics["goodput"]["restarts"] >= 1, metrics["goodput"]
    assert [name for name in objects(gcs, prefix) if name] == []  # discarded once published (the folder's own
    # marker object, "prefix/", which TensorFlow's makedirs writes, stays: it holds nothing)


def test_a_damaged_backup_on_gcs_is_read_around(gcs, tmp_path):
    prefix = f"{BACKUP}-damaged"
    args, _ = stopped_run(gcs, tmp_path, prefix, "SIGTERM")
    kept = objects(gcs, prefix)
    for name, blob in kept.items():  # every checkpoint's data lost: nothing restores
        if name.startswith("chief/") and ".data-" in name:
            blob.delete()
    rerun = run_trainer(*args, env=gcs.environ(), timeout=600)
    assert_ok(rerun)
    assert "cannot be restored" in rerun.stderr and "starting over from epoch 1" in rerun.stderr
    assert read_metrics(tmp_path / "out")["resumed_from_epoch"] == 0


def test_cloud_storage_failing_for_now_ends_the_run_with_75_and_keeps_the_backup(gcs, tmp_path):
    prefix = f"{BACKUP}-unavailable"
    args, _ = stopped_run(gcs, tmp_path, prefix, "SIGTERM")
    before = sorted(objects(gcs, prefix))
    gcs.fail(f"/{BUCKET}/{prefix}%2Fchief%2Fckpt", status=503, count=10_000)  # every read of a checkpoint
    try:
        rerun = run_trainer(*args, env=gcs.environ(), timeout=600)
    finally:
        gcs.faults.clear()
    lines = [line for line in rerun.stderr.splitlines() if "fmnist-train: error:" in line]
    assert rerun.returncode == errors.RETRY and len(lines) == 1, rerun.stderr[-3000:]
    assert f"cannot read the backup in gs://{BUCKET}/{prefix}" in lines[0], lines[0]
    assert "starting over" not in rerun.stderr and "Traceback" not in rerun.stderr
    assert sorted(name for name in objects(gcs, prefix) if not name.startswith(".lease")) == \
        [name for name in before if not name.startswith(".lease")]
    again = run_trainer(*args, env=gcs.environ(), timeout=600)  # Cloud Storage is back: the run resumes
    assert_ok(again)
    assert read_metrics(tmp_path / "out")["resumed_from_epoch"] >= 2
