"""Preemption as the launchers ship it, as processes: per-epoch backups (no --backup_every_steps) and a recipe that
runs many steps per call into the train function, stopped by SIGTERM in the middle of an epoch.

tests/test_faults.py stops a run with `--backup_every_steps` and one step per execution; this file pins what every
launcher actually runs (per-epoch backups, the fast recipe's 64 steps per execution), a stop at an epoch's last
step and early stopping across a preemption (its state is part of the backup); tests/test_exit_codes.py pins the
exit-code contract, tests/test_elastic.py a resume on another worker count. The in-process tests stop `fit` from
a callback hook, as the signal watcher would.
"""

import re
import signal
import time

import pytest

import tf_keras

from support.data import data_flags, splits, train_in_process
from support.processes import assert_ok, read_metrics, run_trainer, start_trainer, wait_for_line
from trainer import errors, train
from trainer.resilience import callback_state, checkpoints, signals

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


# ---- the exit-code contract, literally ------------------------------------------------------------------------

# ---- in-process: where a stop lands, and the callbacks' state ----------------------------------------------------

class Killed(BaseException):
    """Ends a run in-process as SIGKILL would: nothing after it runs (no Keras clean-up catches a BaseException
    that is not an Exception)."""


@pytest.fixture
def sigterm_at(monkeypatch):
    """sigterm_at(n): SIGTERM, as the signal watcher hands it over, as the n-th execution of the run begins (a hook
    on TensorBoard's batch begin, which the trainer always has); sigterm_at(n, kill=True): a kill instead."""
    calls, at = [], []
    on_batch_begin = tf_keras.callbacks.TensorBoard.on_train_batch_begin

    def then_signal(self, batch, logs=None):
        calls.append(batch)
        if at and len(calls) == at[-1][0]:
            if at[-1][1]:
                raise Killed()
            signals.PROCESS.handle(signal.SIGTERM)
        return on_batch_begin(self, batch, logs)
    monkeypatch.setattr(tf_keras.callbacks.TensorBoard, "on_train_batch_begin", then_signal)
    monkeypatch.setattr(tf_keras.callbacks.TensorBoard, "_implements_train_batch_hooks", lambda self: True)

    def arm(execution, kill=False):
        calls.clear()
        at.append((execution, kill))
    return arm


@pytest.mark.parametrize("every_steps", [None, 8], ids=["per-epoch", "every-8-steps"])
def test_a_stop_in_an_epochs_last_execution_keeps_that_epoch_in_the_history(fashion, tmp_path, sigterm_at,
                                                                           every_steps):
    """16 steps an epoch, 4 per execution: the signal as epoch 2's last execution begins. The epoch ends, then
    the backup is saved, after the history took its row in (it used to stop first and lose epoch 2's row)."""
    data = splits(fashion, 1000, test_examples=200)
    settings = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, steps_per_execution=4,
                    backup_every_steps=every_steps)
    uninterrupted = train_in_process(tmp_path / "uninterrupted", data, **settings)
    sigterm_at(8)
    with pytest.raises(checkpoints.Stopped, match="at epoch 2, step 16 of 16"):
        train_in_process(tmp_path / "out", data, **settings)
    sigterm_at(0)
    resumed = train_in_process(tmp_path / "out", data, **settings)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (2, 0)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]


# The reproduction, in-process and on the first 6,000 examples: uninterrupted, early stopping ends the run
# after epoch 5 and keeps epoch 3's weights.
EARLY_STOPPING = dict(model="mlp", recipe="seed", epochs=14, validation_split=0.2, early_stopping_patience=2,
                      learning_rate=0.004, seed=3)


@pytest.fixture(scope="module")
def early_stopped(fashion, tmp_path_factory):
    data = splits(fashion, 6000, validation_split=0.2, test_examples=1000)
    metrics = train_in_process(tmp_path_factory.mktemp("uninterrupted"), data, **EARLY_STOPPING)
    assert metrics["epochs_completed"] < 14, "early stopping never ended the reference run"
    return data, metrics


def assert_same_run(resumed, uninterrupted):
    assert resumed["epochs_completed"] == uninterrupted["epochs_completed"]
    assert resumed["validation_accuracy"] == uninterrupted["validation_accuracy"]
    assert [row["epoch"] for row in resumed["history"]] == [row["epoch"] for row in uninterrupted["history"]]
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]


def test_early_stopping_across_a_sigterm_in_its_last_epoch_keeps_the_uninterrupted_runs_epoch_and_weights(
        early_stopped, tmp_path, sigterm_at):
    data, uninterrupted = early_stopped
    last = uninterrupted["epochs_completed"]
    sigterm_at((last - 1) * 150 + 40)  # seed recipe: 1 step per execution, 150 steps an epoch
    with pytest.raises(checkpoints.Stopped, match=f"at epoch {last}, step 40 of 150"):
        train_in_process(tmp_path, data, **EARLY_STOPPING)
    sigterm_at(0)
    resumed = train_in_process(tmp_path, data, **EARLY_STOPPING)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (last - 1, 40)
    assert_same_run(resumed, uninterrupted)


def test_early_stopping_across_a_kill_between_epochs_and_one_after_it_ended_training(early_stopped, tmp_path,
                                                                                      monkeypatch):
    data, uninterrupted = early_stopped
    last = uninterrupted["epochs_completed"]
    on_epoch_end = callback_state.EpochEnd.on_epoch_end

    def killed_after(epoch_count):
        def then_die(self, epoch, logs=None):
            on_epoch_end(self, epoch, logs)
            if epoch + 1 == epoch_count:
                raise Killed()
        monkeypatch.setattr(callback_state.EpochEnd, "on_epoch_end", then_die)
    killed_after(last - 1)  # just after the backup of the epoch before the last
    with pytest.raises(Killed):
        train_in_process(tmp_path, data, **EARLY_STOPPING)
    monkeypatch.undo()
    resumed = train_in_process(tmp_path, data, **EARLY_STOPPING)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (last - 1, 0)
    assert_same_run(resumed, uninterrupted)

    # Killed while evaluating, after early stopping ended training: the rerun trains no further.
    def killed_evaluating(*args, **kwargs):
        raise Killed()
    monkeypatch.setattr(train, "evaluate_and_export", killed_evaluating)
    with pytest.raises(Killed):
        train_in_process(tmp_path / "again", data, **EARLY_STOPPING)
    monkeypatch.undo()
    resumed = train_in_process(tmp_path / "again", data, **EARLY_STOPPING)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (last, 0)
    assert_same_run(resumed, uninterrupted)


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


def test_goodput_counts_the_restarts_and_the_steps_a_kill_made_train_again(fashion, tmp_path, sigterm_at):
    """16 steps an epoch, a backup every 10: killed as the 25th step begins (24 done, the last backup at 20), then
    SIGTERM as the rerun's 10th begins (step 30 saved), then the run that finishes. In-process the kill still lets
    the run write its last record (a process killed by SIGKILL leaves the one of its last heartbeat)."""
    data = splits(fashion, 1000, test_examples=200)
    settings = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, backup_every_steps=10)
    sigterm_at(25, kill=True)
    with pytest.raises(Killed):
        train_in_process(tmp_path, data, **settings)
    sigterm_at(10)
    with pytest.raises(checkpoints.Stopped, match="at epoch 2, step 14 of 16"):
        train_in_process(tmp_path, data, **settings)
    sigterm_at(0)
    metrics = train_in_process(tmp_path, data, **settings)
    goodput = metrics["goodput"]
    assert (goodput["runs"], goodput["restarts"], goodput["steps_recomputed"]) == (3, 2, 24 - 20)
    assert goodput["workers_per_run"] == [1, 1, 1]
    assert 0 < goodput["startup_seconds"] < goodput["total_seconds"]
    assert 0 < goodput["backup_seconds"] < goodput["total_seconds"]
    assert 0 < goodput["useful_fraction"] < 1
    assert not (tmp_path / "checkpoints").exists()  # goodput.json went with the backup


def test_goodput_of_a_run_never_stopped(fashion, tmp_path):
    metrics = train_in_process(tmp_path, splits(fashion, 600, test_examples=200), model="mlp", recipe="seed",
                               epochs=2)
    goodput = metrics["goodput"]
    assert (goodput["runs"], goodput["restarts"], goodput["steps_recomputed"]) == (1, 0, 0)
    assert 0 < goodput["useful_fraction"] < 1
