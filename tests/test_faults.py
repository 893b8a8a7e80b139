"""What clusters do to jobs, as processes: SIGTERM saves the step in progress and says "retry me", a rerun
resumes mid-epoch; a backup that lost files never crashes the rerun; a second instance is turned away. The fault
soak (kills at random moments) is tests/fault_soak.py, a step of `make test` of its own."""

import os
import signal
import time

import pytest

from conftest import assert_ok, data_flags, read_metrics, run_trainer, start_trainer
from trainer import errors

pytestmark = pytest.mark.e2e

RUN = ("--model=mlp", "--recipe=seed", "--batch_size=64", "--train_examples=12000", "--epochs=3",
       "--backup_every_steps=20")


def wait_for_line(path, text, process, timeout=180):
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert process.poll() is None, f"the trainer exited before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {text!r} in time"
        time.sleep(0.05)


def test_sigterm_saves_the_step_in_progress_and_the_rerun_continues_mid_epoch(prepared_data, tmp_path):
    out = tmp_path / "out"
    args = (*RUN, f"--output_dir={out}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "Epoch 2/3", first)
    time.sleep(0.5)
    signalled = time.time()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == errors.RETRY
    assert time.time() - signalled < 10
    text = log.read_text()
    assert "Traceback" not in text and "Stopped by SIGTERM: saved the backup at epoch 2, step" in text
    assert not (out / "metrics.json").exists()
    step = int(text.split("saved the backup at epoch 2, step ")[1].split()[0])

    second = run_trainer(*args)
    assert_ok(second)
    assert f"continuing at epoch 2, step {step + 1} of 188" in second.stderr
    metrics = read_metrics(out)
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (1, step)
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert not (out / "checkpoints").exists()


def test_a_rerun_after_the_backup_lost_its_data_files_finishes(prepared_data, tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "backup"
    args = (*RUN, f"--output_dir={out}", f"--checkpoint_dir={checkpoints}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "Epoch 2/3", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    data_files = [name for name in os.listdir(checkpoints / "chief") if ".data-" in name]
    assert data_files
    for name in data_files:
        os.remove(checkpoints / "chief" / name)
    second = run_trainer(*args)
    assert_ok(second)
    assert "cannot be restored" in second.stderr and "starting over from epoch 1" in second.stderr
    assert "Traceback" not in second.stderr
    assert [row["epoch"] for row in read_metrics(out)["history"]] == [1, 2, 3]


def test_a_second_instance_is_turned_away_while_the_first_runs(prepared_data, tmp_path):
    out = tmp_path / "out"
    args = (*RUN, f"--output_dir={out}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "Epoch 1/3", first)
    second = run_trainer(*args)
    assert second.returncode == errors.RETRY, second.stderr
    assert "another instance of this job holds the backup" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.wait(timeout=300) == 0
    assert read_metrics(out)["epochs_completed"] == 3
    again = run_trainer(*args)  # the same command once more: already finished, nothing to do
    assert_ok(again)
    assert "already holds the finished result of this command" in again.stderr
