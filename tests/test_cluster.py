"""The job as a cluster runs it: many workers in lockstep, a preempted run resuming, Vertex AI's environment."""

import json
import os
import signal
import time

import pytest

from trainer import errors
from conftest import (assert_ok, data_flags, read_metrics, run_trainer, splits, start_trainer, train_in_process,
                      wait_all,
                      worker_tf_configs)

pytestmark = pytest.mark.e2e  # processes: many workers, kills, resumes

# Small but real: several epochs of a few thousand examples each, so that a kill can land between epochs.
MLP_RUN = ("--model=mlp", "--recipe=seed", "--batch_size=128")


def epochs_backed_up(checkpoint_dir):
    path = os.path.join(checkpoint_dir, "history.json")
    try:
        with open(path) as f:
            return len(json.load(f))
    except (OSError, ValueError):
        return 0


def wait_for_backup(checkpoint_dir, epochs, processes, timeout=300):
    deadline = time.time() + timeout
    while epochs_backed_up(checkpoint_dir) < epochs:
        assert time.time() < deadline, "training never reached the epoch to interrupt"
        assert all(p.poll() is None for p in processes), "a trainer exited before it could be interrupted"
        time.sleep(0.1)


def test_two_workers_train_in_lockstep_and_only_the_chief_publishes(fashion, tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    args = (*MLP_RUN, "--train_examples=6000", "--epochs=3", f"--output_dir={out}",
            f"--checkpoint_dir={checkpoints}", *data_flags())
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_trainer(*args, env={"TF_CONFIG": config}, log_path=log)
               for config, log in zip(worker_tf_configs(2), logs)]
    assert wait_all(workers) == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)

    metrics = read_metrics(out)
    assert metrics["strategy"] == "multi_worker_mirrored"
    assert metrics["num_workers"] == 2 and metrics["num_replicas"] == 2
    assert sorted(os.listdir(out)) == ["logs", "metrics.json", "saved_model", "test_predictions.npz"]
    assert not checkpoints.exists() or not os.listdir(checkpoints)  # backup removed, no worker temp left
    # Both workers end with the same weights: the non-chief logs the fingerprint the chief published.
    worker_log = logs[1].read_text()
    assert f"This worker is done (weights sha256 {metrics['weights_sha256']})" in worker_log
    assert "results in" not in worker_log  # the non-chief published nothing

    # The same global batch in one process learns about as well.
    single = train_in_process(tmp_path / "single", splits(fashion, 6000), model="mlp", recipe="seed", batch_size=128,
                              epochs=3)
    assert metrics["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.03)


def test_a_killed_run_resumes_from_its_last_epoch(prepared_data, tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    args = (*MLP_RUN, "--train_examples=12000", "--epochs=3", f"--output_dir={out}",
            f"--checkpoint_dir={checkpoints}", *data_flags())
    first = start_trainer(*args, log_path=tmp_path / "first.log")
    wait_for_backup(checkpoints, 1, [first])
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = epochs_backed_up(checkpoints)
    assert not (out / "metrics.json").exists()  # a killed run never looks finished

    second = run_trainer(*args)
    assert_ok(second)
    assert f"continuing at epoch {done + 1}, step 1 of 94 (epochs 1-{done} were done)" in second.stderr
    assert "training epochs 1-" not in second.stdout + second.stderr  # not from scratch
    metrics = read_metrics(out)
    assert metrics["resumed_from_epoch"] == done
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert metrics["test_accuracy"] > 0.75
    assert not checkpoints.exists()  # the backup is removed after success


# SIGTERM here; SIGKILL of a worker is in the fault soak (tests/fault_soak.py, a step of `make test`).
@pytest.mark.parametrize("stop", [signal.SIGTERM], ids=["SIGTERM"])
def test_two_workers_stop_cleanly_when_one_is_stopped_and_resume_together(prepared_data, tmp_path, stop):
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    args = (*MLP_RUN, "--train_examples=12000", "--epochs=3", f"--output_dir={out}",
            f"--checkpoint_dir={checkpoints}", *data_flags())
    configs = worker_tf_configs(2)
    workers = [start_trainer(*args, env={"TF_CONFIG": c}, log_path=tmp_path / f"w{i}.log")
               for i, c in enumerate(configs)]
    wait_for_backup(checkpoints, 1, workers)
    workers[1].send_signal(stop)
    chief_status = workers[0].wait(timeout=180)
    assert workers[1].wait() == (errors.RETRY if stop == signal.SIGTERM else -signal.SIGKILL)
    chief_log = (tmp_path / "w0.log").read_text()
    assert chief_status == errors.RETRY
    if stop == signal.SIGTERM:  # it could not save alone (a save is a collective): it says so, and stops
        worker_log = (tmp_path / "w1.log").read_text()
        assert "Traceback" not in worker_log and "a save needs every worker" in worker_log
    assert "lost contact with another worker" in chief_log and "rerun every worker" in chief_log
    assert "Traceback" not in chief_log
    assert not (out / "metrics.json").exists()
    done = epochs_backed_up(checkpoints)

    configs = worker_tf_configs(2)  # a rescheduled job may get new addresses
    workers = [start_trainer(*args, env={"TF_CONFIG": c}, log_path=tmp_path / f"r{i}.log")
               for i, c in enumerate(configs)]
    assert wait_all(workers) == [0, 0], (tmp_path / "r0.log").read_text()[-3000:]
    for i in range(2):
        assert f"continuing at epoch {done + 1}" in (tmp_path / f"r{i}.log").read_text()
    metrics = read_metrics(out)
    assert metrics["resumed_from_epoch"] == done and metrics["num_workers"] == 2
    assert not checkpoints.exists()
