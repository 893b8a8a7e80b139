"""Preemption as the launchers ship it, as processes: per-epoch backups and SIGTERM mid-epoch, and early stopping
across a SIGKILL and a SIGTERM, ending as the uninterrupted run (tests/unit/test_preemption.py: in-process)."""

import re
import signal
import time

import pytest

from support.data import data_flags
from support.processes import assert_ok, read_metrics, run_trainer, start_trainer, wait_for_line
from trainer import errors


# The fast recipe (64 steps per execution) on a CNN: 24,000 examples at batch 128 are 188 steps an epoch, three
# executions (64, 64, 60) of about a second each here, so a SIGTERM sent just after "epoch 1/2: " (epoch 1 done)
# lands inside epoch 2's first or second execution: mid-epoch, at no backup boundary (the backup is at step 188).
STEPS_PER_EPOCH, STEPS_PER_EXECUTION = 188, 64


FAST = ("--model=cnn", "--recipe=fast", "--train_examples=24000", "--epochs=2")


@pytest.mark.e2e
def test_sigterm_mid_epoch_with_per_epoch_backups_saves_the_step_and_the_rerun_ends_with_the_same_weights(
        prepared_data, tmp_path):
    uninterrupted = run_trainer(*FAST, f"--output_dir={tmp_path / 'uninterrupted'}", *data_flags())
    assert_ok(uninterrupted)
    reference = read_metrics(tmp_path / "uninterrupted")

    out = tmp_path / "out"
    args = (*FAST, f"--output_dir={out}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "epoch 1/2: ", first)  # epoch 2 is being trained
    time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == errors.RETRY
    text = log.read_text()
    assert "Traceback" not in text and not (out / "metrics.json").exists()
    saved = re.search(r"Stopped by SIGTERM: saved the backup at epoch (\d+), step (\d+) of (\d+)", text)
    assert saved, text[-3000:]
    epoch, step, of = (int(x) for x in saved.groups())
    # Keras calls back once per execution, so the step saved is the last one of an execution: here one of the
    # epoch's first two, not the epoch's end (the per-epoch backup's boundary).
    assert (epoch, of) == (2, STEPS_PER_EPOCH) and step in (STEPS_PER_EXECUTION, 2 * STEPS_PER_EXECUTION), saved[0]

    rerun = run_trainer(*args)
    assert_ok(rerun)
    assert f"continuing at epoch 2, step {step + 1} of {STEPS_PER_EPOCH}" in rerun.stderr
    metrics = read_metrics(out)
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (1, step)
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["weights_sha256"] == reference["weights_sha256"]
    assert metrics["test_accuracy"] == reference["test_accuracy"]


@pytest.mark.e2e
def test_early_stopping_across_a_sigkill_and_a_sigterm_ends_as_the_uninterrupted_run(prepared_data, tmp_path):
    """The issue's reproduction as processes: uninterrupted, early stopping ends the run after epoch 5 and keeps
    epoch 3 (val_accuracy 0.8250 here). The same job killed (SIGKILL) between epochs 3 and 4, then stopped
    (SIGTERM) in epoch 5, then run again, ends at the same epoch with the same weights (it used to train on to
    epoch 9 and keep epoch 7: EarlyStopping's state was not in the backup)."""
    args = ("--model=mlp", "--recipe=seed", "--epochs=14", "--train_examples=6000", "--validation_split=0.2",
            "--early_stopping_patience=2", "--learning_rate=0.004", "--seed=3", *data_flags())
    uninterrupted = run_trainer(*args, f"--output_dir={tmp_path / 'uninterrupted'}")
    assert_ok(uninterrupted)
    reference = read_metrics(tmp_path / "uninterrupted")
    assert reference["epochs_completed"] == 5 and "the end of the best epoch: 3" in uninterrupted.stdout
    assert reference["validation_accuracy"] == pytest.approx(0.825, abs=0.01)

    out = tmp_path / "out"
    log = tmp_path / "killed.log"
    killed = start_trainer(*args, f"--output_dir={out}", log_path=log)
    wait_for_line(log, "epoch 3/14: ", killed)  # epoch 3 backed up, epoch 4 begun
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL

    log = tmp_path / "stopped.log"
    stopped = start_trainer(*args, f"--output_dir={out}", log_path=log)
    wait_for_line(log, "epoch 4/14: ", stopped)  # the line of epoch 4's end, inside fit: epoch 5 comes next
    time.sleep(0.05)  # (0.3 s was all of epoch 5 on a quiet AVX-512 host: the SIGTERM landed after fit)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == errors.RETRY
    text = log.read_text()
    assert "continuing at epoch 4, step 1 of 150 (epochs 1-3 were done)" in text, text[-3000:]
    assert "Stopped by SIGTERM: saved the backup at epoch 5, step " in text

    rerun = run_trainer(*args, f"--output_dir={out}")
    assert_ok(rerun)
    assert "Epoch 5: early stopping" in rerun.stdout and "the end of the best epoch: 3" in rerun.stdout
    metrics = read_metrics(out)
    assert metrics["resumed_from_epoch"] in (4, 5)  # 5: the SIGTERM came as epoch 5 ended
    assert metrics["epochs_completed"] == 5 and metrics["validation_accuracy"] == reference["validation_accuracy"]
    assert metrics["weights_sha256"] == reference["weights_sha256"]
    # What the faults cost: two reruns resumed; the kill came early in epoch 4, after the backup of epoch 3.
    goodput = metrics["goodput"]
    assert (goodput["runs"], goodput["restarts"]) == (3, 2) and 0 <= goodput["steps_recomputed"] < 150, goodput
    assert reference["goodput"]["restarts"] == 0 and reference["goodput"]["steps_recomputed"] == 0
