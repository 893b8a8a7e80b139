"""Out of space is "retry me", in one line: the backup folder or the output on a small tmpfs (CI runs as root and
mounts them), and a read of the backup that fails for now (a permission flap, root's override of file
permissions dropped). Each ends with 75, names the folder and the cause, publishes nothing that looks finished
and keeps the last good backup; the same command finishes once the space is back."""

import os
import signal
import subprocess
import sys

import pytest

from support.data import ROOT, data_flags
from support.processes import (assert_ok, clean_env, read_metrics, run_trainer, start_trainer, wait_all,
                               wait_for_line, worker_tf_configs)
from trainer import errors
from trainer.resilience import restore

MLP = ("--model=mlp", "--recipe=seed", "--batch_size=64")


@pytest.fixture
def small_disk(tmp_path):
    """mount(name, size) -> a folder on a tmpfs of `size`; unmounted at the end."""
    mounted = []

    def mount(name, size="300k"):
        folder = tmp_path / name
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode:
            reason = f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}): run as root"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder):
    """Writes into `folder` until its file system is full."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if "fmnist-train: error:" in line]
    assert result.returncode == errors.RETRY, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.e2e
def test_a_full_backup_folder_is_retry_me_in_one_line(prepared_data, tmp_path, small_disk):
    backup = small_disk("backup-disk") / "backup"
    result = run_trainer(*MLP, "--train_examples=512", "--epochs=1", f"--output_dir={tmp_path / 'out'}",
                         f"--checkpoint_dir={backup}", *data_flags(), timeout=300)
    line = one_line_error(result)
    assert f"could not write the backup in {backup}" in line and "no space left on device" in line, line
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.e2e
def test_a_disk_that_fills_up_keeps_the_last_good_backup_and_the_rerun_finishes(prepared_data, tmp_path,
                                                                                small_disk):
    disk = small_disk("backup-disk", size="16m")
    args = (*MLP, "--train_examples=8000", "--epochs=4", f"--output_dir={tmp_path / 'out'}",
            f"--checkpoint_dir={disk / 'backup'}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    try:
        wait_for_line(log, "epoch 1/4: ", first)  # epoch 1's backup is saved: the disk fills up in epoch 2
        fill(disk)
        assert first.wait(timeout=120) == errors.RETRY, log.read_text()[-3000:]
    finally:
        first.kill()
    text = log.read_text()
    assert "Traceback" not in text and "no space left on device" in text, text[-3000:]
    checkpoints = f"{disk / 'backup'}/{restore.CHECKPOINTS}"
    state = restore.read_state(checkpoints)
    assert restore.checkpoint_problem(state.model_checkpoint_path) is None  # the last good backup restores
    assert not (tmp_path / "out" / "metrics.json").exists()
    os.remove(disk / "filler")
    rerun = run_trainer(*args, timeout=300)
    assert_ok(rerun)
    metrics = read_metrics(tmp_path / "out")
    assert metrics["resumed_from_epoch"] >= 1 and [row["epoch"] for row in metrics["history"]] == [1, 2, 3, 4]


@pytest.mark.e2e
def test_a_full_output_folder_is_retry_me_and_the_rerun_publishes_without_training(prepared_data, tmp_path,
                                                                                   small_disk):
    out = small_disk("output-disk")
    args = (*MLP, "--train_examples=512", "--epochs=1", f"--output_dir={out}",
            f"--checkpoint_dir={tmp_path / 'backup'}", *data_flags())
    line = one_line_error(run_trainer(*args, timeout=300))
    assert str(out) in line and "no space left on device" in line.lower(), line
    assert not (out / "metrics.json").exists() and os.listdir(tmp_path / "backup" / restore.CHECKPOINTS)
    subprocess.run(["mount", "-o", "remount,size=16m", str(out)], check=True)
    rerun = run_trainer(*args, timeout=300)
    assert_ok(rerun)
    assert "nothing is left to train" in rerun.stderr or "continuing at" in rerun.stderr, rerun.stderr[-2000:]
    assert read_metrics(out)["epochs_completed"] == 1


@pytest.mark.e2e
def test_two_workers_on_a_full_backup_folder_both_exit_75_without_hanging(prepared_data, tmp_path, small_disk):
    backup = small_disk("backup-disk") / "backup"
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [start_trainer(*MLP, "--train_examples=512", "--epochs=1", f"--output_dir={tmp_path / 'out'}",
                             f"--checkpoint_dir={backup}", "--cluster_timeout=60", *data_flags(),
                             env={"TF_CONFIG": config}, log_path=log)
               for config, log in zip(worker_tf_configs(2), logs)]
    try:
        statuses = wait_all(workers, timeout=180)
    finally:
        for worker in workers:
            worker.kill()
    texts = [log.read_text() for log in logs]
    assert statuses == [errors.RETRY, errors.RETRY], [text[-2000:] for text in texts]
    assert "no space left on device" in texts[0] and "Traceback" not in "".join(texts), texts[0][-2000:]


@pytest.mark.e2e
def test_a_backup_unreadable_for_now_is_kept_and_the_run_asks_for_a_retry(prepared_data, tmp_path):
    """The issue's reproduction: the newest checkpoint made unreadable for one rerun, which runs without root's
    override of file permissions (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)."""
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if subprocess.run([*unprivileged, "true"]).returncode:
        pytest.fail("setpriv cannot drop capabilities here")
    backup, out = tmp_path / "backup", tmp_path / "out"
    args = (*MLP, "--train_examples=8000", "--epochs=3", f"--output_dir={out}", f"--checkpoint_dir={backup}",
            *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    try:
        wait_for_line(log, "epoch 1/3: ", first)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == errors.RETRY, log.read_text()[-3000:]
    finally:
        first.kill()
    chief = backup / restore.CHECKPOINTS
    data = sorted(chief / name for name in os.listdir(chief) if ".data-" in name)
    assert data
    for path in data:
        path.chmod(0)
    rerun = subprocess.run([*unprivileged, sys.executable, "-m", "trainer.task", *args], cwd=ROOT, env=clean_env(),
                           capture_output=True, text=True, timeout=300)
    line = one_line_error(rerun)
    assert f"cannot read the backup in {backup}" in line and "Permission denied" in line, line
    assert "starting over" not in rerun.stderr and sorted(chief / n for n in os.listdir(chief) if ".data-" in n) == data
    for path in data:
        path.chmod(0o644)
    again = run_trainer(*args, timeout=300)
    assert_ok(again)
    assert read_metrics(out)["resumed_from_epoch"] >= 1, again.stderr[-2000:]
