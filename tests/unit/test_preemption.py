"""Preemption as the launchers ship it, as processes: per-epoch backups (no --backup_every_steps) and a recipe that
runs many steps per call into the train function, stopped by SIGTERM in the middle of an epoch.

tests/e2e/test_faults.py stops a run with `--backup_every_steps` and one step per execution; this file pins what every
launcher actually runs (per-epoch backups, the fast recipe's 64 steps per execution), a stop at an epoch's last
step and early stopping across a preemption (its state is part of the backup); tests/unit/test_exit_codes.py pins the
exit-code contract, tests/e2e/test_elastic.py a resume on another worker count. The in-process tests stop `fit` from
a callback hook, as the signal watcher would.
"""

import signal

import pytest

import tf_keras

from support.data import splits, train_in_process
from trainer.training import train
from trainer.resilience import callback_state, checkpoints, signals

# They read backups, weights and metrics, never the SavedModel (support/fixtures.py).
pytestmark = pytest.mark.usefixtures("placeholder_saved_model")


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
