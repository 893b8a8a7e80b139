"""A stop signal at the wrong moment (issue 26): each race of the stop path with its timing injected, in-process.

The process's exit is replaced by a recorder (`exits`), so a deadline that fires, or an exit that takes too long,
shows in the test instead of ending it.
"""

import os
import signal
import threading
import time

import pytest
import tf_keras

from support.data import splits, train_in_process
from trainer.resilience import checkpoints, signals

# They read backups, weights and metrics, never the SavedModel (support/fixtures.py).
pytestmark = pytest.mark.usefixtures("placeholder_saved_model")

SETTINGS = dict(model="mlp", recipe="seed", epochs=2, batch_size=64)


@pytest.fixture
def exits(monkeypatch):
    """The exit statuses the code under test asked for (os._exit recorded, not done), with their times."""
    calls = []
    monkeypatch.setattr(os, "_exit", lambda status: calls.append((status, time.monotonic())))
    return calls


@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setattr(signals, "STOP_DEADLINE_SECONDS", 0.3)
    return 0.3


def test_a_deadline_armed_while_training_ends_is_cancelled_with_it(exits, short_deadline):
    """The signal is taken while `fit` ends: training.stop() is slow on purpose, and training ends inside it. The
    deadline must not be left armed after training (it exited 75 later, even after publishing)."""
    stop_called, training_ended = threading.Event(), threading.Event()

    def slow_stop():
        stop_called.set()
        training_ended.wait(5)
    process = signals.StopSignals()
    process.start_training(signals.Training(slow_stop))
    watcher = threading.Thread(target=process.handle, args=(signal.SIGTERM,))
    watcher.start()
    assert stop_called.wait(5)
    late = process.end_training()
    training_ended.set()
    watcher.join(5)
    time.sleep(short_deadline * 4)
    assert exits == []
    assert late == signal.SIGTERM  # the request is handed back: the caller stops the run


def test_publishing_cancels_a_stop_deadline(exits, short_deadline):
    process = signals.StopSignals()
    process.start_training(signals.Training(lambda: None))
    process.handle(signal.SIGTERM)
    saved = {signum: signal.getsignal(signum) for signum in signals.SIGNALS}
    try:
        process.finished()
        time.sleep(short_deadline * 4)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert exits == []


def test_a_signal_after_publishing_is_ignored(exits):
    process = signals.StopSignals()
    saved = {signum: signal.getsignal(signum) for signum in signals.SIGNALS}
    try:
        process.finished()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    process.handle(signal.SIGTERM)
    assert exits == []


def test_exiting_on_a_signal_is_bounded_with_storage_hung(exits):
    """The clean-ups (a goodput write, a lease release) hang, as on storage that does not answer: the exit still
    comes within EXIT_SECONDS."""
    released = threading.Event()
    process = signals.StopSignals()
    process.before_exit(lambda: released.wait(60))
    started = time.monotonic()
    exiting = threading.Thread(target=process.exit_now, args=(signal.SIGTERM,), daemon=True)
    exiting.start()
    exiting.join(signals.EXIT_SECONDS + 5)
    released.set()
    assert exits, "no exit within EXIT_SECONDS + 5 s"
    status, at = exits[0]
    assert status == 75 and at - started < signals.EXIT_SECONDS


def test_a_sigterm_in_the_last_vote_stops_the_run_with_75_instead_of_being_lost(fashion, tmp_path, monkeypatch,
                                                                               exits):
    """The signal lands while the workers take their last vote (after this worker's request was read): the run
    must stop with its last epoch's end saved, not evaluate and publish as if nothing happened."""
    agreed_stop = checkpoints.Backup._agreed_stop

    def signal_during_the_last_vote(self, final=False):
        answer = agreed_stop(self, final=final)
        if final:
            signals.PROCESS.handle(signal.SIGTERM)
        return answer
    monkeypatch.setattr(checkpoints.Backup, "_agreed_stop", signal_during_the_last_vote)
    data = splits(fashion, 1000, test_examples=200)
    with pytest.raises(checkpoints.Stopped, match=r"stopped by SIGTERM at epoch 2, step 16 of 16"):
        train_in_process(tmp_path / "out", data, **SETTINGS)
    assert not (tmp_path / "out" / "metrics.json").exists()
    monkeypatch.setattr(checkpoints.Backup, "_agreed_stop", agreed_stop)
    metrics = train_in_process(tmp_path / "out", data, **SETTINGS)
    assert metrics["resumed_from_epoch"] == 2 and [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert exits == []


def test_the_deadline_never_cuts_the_agreed_save(fashion, tmp_path, monkeypatch, exits, short_deadline):
    """The agreed save is slow on purpose (Cloud Storage), longer than the deadline: it must finish, and the run
    stop with Stopped (75), not be cut by the deadline's exit mid-write."""
    write = tf_keras.callbacks.BackupAndRestore._backup  # the write itself, under the trainer's bookkeeping
    on_batch_end, calls = checkpoints.Backup.on_train_batch_end, []

    def slow_write(self, epoch, batch=0):
        if self.signals.requested is not None:  # every save once the stop is asked for
            time.sleep(short_deadline * 4)
        write(self, epoch, batch)

    def sigterm_at_the_20th_step(self, batch, logs=None):
        calls.append(batch)
        if len(calls) == 20:
            signals.PROCESS.handle(signal.SIGTERM)
        on_batch_end(self, batch, logs)
    monkeypatch.setattr(tf_keras.callbacks.BackupAndRestore, "_backup", slow_write)
    monkeypatch.setattr(checkpoints.Backup, "on_train_batch_end", sigterm_at_the_20th_step)
    data = splits(fashion, 1000, test_examples=200)
    with pytest.raises(checkpoints.Stopped, match="at epoch 2, step 4 of 16"):
        train_in_process(tmp_path / "out", data, backup_every_steps=5, **SETTINGS)
    time.sleep(short_deadline * 2)
    assert exits == []
