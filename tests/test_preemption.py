"""Preemption as the launchers ship it, as processes: per-epoch backups (no --backup_every_steps) and a recipe that
runs many steps per call into the train function, stopped by SIGTERM in the middle of an epoch.

tests/test_faults.py stops a run with `--backup_every_steps` and one step per execution; this file pins what every
launcher actually runs (per-epoch backups, the fast recipe's 64 steps per execution), a stop at an epoch's last
step, early stopping across a preemption (its state is part of the backup), and the exit-code contract of the
README. The in-process tests stop `fit` from a callback hook, as the signal watcher would.
"""

import re
import signal
import subprocess
import sys
import time

import pytest

import tf_keras

from support.data import ROOT, data_flags, splits, train_in_process
from support.processes import (assert_ok, clean_env, read_metrics, run_trainer, start_trainer, wait_all, wait_for_line,
                               worker_tf_configs)
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

# A bug planted in a real trainer process, through the command line's own entry point: the trainer's code stays
# free of test seams. It strikes after training, where only a bug could raise this.
PLANTED_BUG = """
import sys
from trainer import task, train

def weights_fingerprint(model):
    raise ZeroDivisionError("a bug planted by tests/test_preemption.py")

train.weights_fingerprint = weights_fingerprint
sys.argv = ["fmnist-train", *sys.argv[1:]]
task.run()
"""
TINY = ("--model=mlp", "--recipe=seed", "--train_examples=512", "--epochs=1")


def readme_exit_statuses():
    """{status: meaning} from the README's exit-code table, in its order."""
    section = (ROOT / "README.md").read_text().split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.M)
    return {int(status): meaning.strip() for status, meaning in rows}


def test_the_exit_statuses_are_the_readmes_literally():
    """0/2/75/1 here are numbers, not errors.* constants: a launcher's podFailurePolicy and retry rules are
    written against the numbers, so a constant that drifts must fail a test."""
    table = readme_exit_statuses()
    assert list(table) == [0, 2, 75, 1], table
    assert table[0].startswith("finished") and table[2].startswith("a mistake a retry cannot fix")
    assert table[75].startswith("retry me") and table[1].startswith("an unexpected crash (a bug)")
    assert (errors.FINISHED, errors.PERMANENT, errors.RETRY, errors.CRASHED) == (0, 2, 75, 1)


@pytest.mark.e2e
def test_each_exit_status_from_a_real_trainer_process(prepared_data, tmp_path):
    # 2: a mistake a retry cannot fix, one line.
    bad = run_trainer("--epochs=0", f"--output_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.strip().startswith("fmnist-train: error: ") and len(bad.stderr.strip().splitlines()) == 1

    # 75: SIGTERM outside training (here: while the data loads) says "retry me" at once.
    log = tmp_path / "stopped.log"
    stopped = start_trainer(*TINY, f"--output_dir={tmp_path / 'stopped'}", *data_flags(), log_path=log)
    wait_for_line(log, "Output in ", stopped)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=30) == 75, log.read_text()[-3000:]
    assert "stopped by SIGTERM outside training" in log.read_text()

    # 1: a crash (a bug) exits 1 with its traceback, not a one-line message, and keeps the backup for a rerun.
    out = tmp_path / "crashed"
    args = (*TINY, f"--output_dir={out}", *data_flags())
    crashed = subprocess.run([sys.executable, "-c", PLANTED_BUG, *args], cwd=ROOT, env=clean_env(),
                             capture_output=True, text=True, timeout=600)
    assert crashed.returncode == 1, crashed.stderr[-3000:]
    assert "Traceback (most recent call last)" in crashed.stderr
    assert "ZeroDivisionError: a bug planted by tests/test_preemption.py" in crashed.stderr
    assert "fmnist-train: error:" not in crashed.stderr and not (out / "metrics.json").exists()
    assert (out / "checkpoints" / "chief").is_dir()

    # 0: the rerun (without the bug) resumes from that backup and finishes.
    finished = run_trainer(*args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "continuing at epoch 2" in finished.stderr and (out / "metrics.json").is_file()


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
    wait_for_line(log, "epoch 4/14: ", stopped)  # epoch 5 begun
    time.sleep(0.3)
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


# ---- elastic resume: a backup written by N workers, resumed by M --------------------------------------------------

# 47 steps an epoch of a global batch of 128 (not divisible by 3: three workers take 43, 43 and 42 of each batch).
ELASTIC = ("--model=mlp", "--recipe=seed", "--batch_size=128", "--train_examples=6000", "--epochs=3")
# The guarantee (docs/distributed.md): the same examples in the same order and the same global batches, so the
# same run but for the order in which the replicas' gradients are summed. 1 -> 2 -> 1 workers ended 1.3e-6 apart
# in test loss here; this allows far more, and far less than a change of seed (0.8122-0.8334 in accuracy).
ELASTIC_TOLERANCE = dict(test_loss=0.005, test_accuracy=0.005)


@pytest.fixture(scope="module")
def one_process_reference(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert_ok(run_trainer(*ELASTIC, f"--output_dir={out}", *data_flags()))
    return read_metrics(out)


def start_workers(count, args, tmp_path, name):
    configs = worker_tf_configs(count) if count > 1 else [None]
    return [start_trainer(*args, env={"TF_CONFIG": config} if config else None, log_path=tmp_path / f"{name}{i}.log")
            for i, config in enumerate(configs)]


@pytest.mark.e2e
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)], ids=["2-to-1", "1-to-2", "2-to-3"])
def test_a_backup_written_by_some_workers_resumes_on_another_count(one_process_reference, tmp_path, before, after):
    checkpoints_dir = tmp_path / "checkpoints"
    args = (*ELASTIC, f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={checkpoints_dir}", *data_flags())
    workers = start_workers(before, args, tmp_path, "before")
    deadline = time.time() + 300
    while not (checkpoints_dir / "history.json").exists():  # written once the backup of epoch 1 is saved
        assert all(w.poll() is None for w in workers) and time.time() < deadline, \
            (tmp_path / "before0.log").read_text()[-3000:]
        time.sleep(0.05)
    for worker in workers:  # the capacity is gone: every worker at once (a spot reclaim of the whole job)
        worker.send_signal(signal.SIGKILL)
    wait_all(workers, timeout=60)

    workers = start_workers(after, args, tmp_path, "after")
    logs = [tmp_path / f"after{i}.log" for i in range(after)]
    assert wait_all(workers, timeout=600) == [0] * after, logs[0].read_text()[-3000:]
    chief_log = logs[0].read_text()
    assert "Traceback" not in chief_log
    resumed = re.search(r"continuing at epoch (\d+), step 1 of 47 \(epochs 1-\d+ were done\); a backup written "
                        rf"by {before} workers?, resumed by {after}: the same global batch", chief_log)
    assert resumed, chief_log[-3000:]
    metrics = read_metrics(tmp_path / "out")
    assert metrics["num_workers"] == after and metrics["goodput"]["workers_per_run"] == [before, after]
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    for key, tolerance in ELASTIC_TOLERANCE.items():
        assert metrics[key] == pytest.approx(one_process_reference[key], abs=tolerance), key
    print(f"\n{before} -> {after} workers: test loss {metrics['test_loss']:.7f}, accuracy "
          f"{metrics['test_accuracy']:.4f}; one process never stopped: {one_process_reference['test_loss']:.7f}, "
          f"{one_process_reference['test_accuracy']:.4f}")
