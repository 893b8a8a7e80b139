"""The job as a cluster runs it: many workers in lockstep, a preempted run resuming, Vertex AI's environment."""

import json
import os
import re
import signal
import socket
import time

import pytest

from trainer.training import distribution
from trainer import errors
from support.data import data_flags, splits, train_in_process
from support.processes import (assert_ok, read_metrics, run_trainer, start_trainer, start_workers, wait_all,
                               wait_for_line, worker_tf_configs)

pytestmark = pytest.mark.e2e  # processes: many workers, kills, resumes

# Small but real: several epochs of a few thousand examples each, so that a kill can land between epochs.
MLP_RUN = ("--model=mlp", "--recipe=seed", "--batch_size=128")
# Per-epoch backups, as every launcher ships: 94 steps an epoch.
TWO_WORKER_RUN = (*MLP_RUN, "--train_examples=12000", "--epochs=3")
# The native lines a surviving worker printed before the job's own one (issue 17).
NATIVE_ABORT_LINES = ("base_collective_executor", "StartAbort", "The tasks have crashed", "coordination_service",
                      "Error received from peer  {")


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


@pytest.fixture(scope="module")
def uninterrupted_two_workers(prepared_data, tmp_path_factory):
    """The 2-worker run of TWO_WORKER_RUN never stopped: (metrics, worker logs, checkpoint dir)."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    workers, logs = start_workers((*TWO_WORKER_RUN, f"--output_dir={out}", f"--checkpoint_dir={checkpoints}",
                                   *data_flags()), tmp_path, "worker")
    assert wait_all(workers) == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    return read_metrics(out), [log.read_text() for log in logs], checkpoints, out


def test_two_workers_train_in_lockstep_and_only_the_chief_publishes(fashion, uninterrupted_two_workers, tmp_path):
    metrics, logs, checkpoints, out = uninterrupted_two_workers
    assert metrics["strategy"] == "multi_worker_mirrored"
    assert metrics["num_workers"] == 2 and metrics["num_replicas"] == 2
    assert sorted(os.listdir(out)) == ["logs", "metrics.json", "saved_model", "test_predictions.npz"]
    assert not checkpoints.exists() or not os.listdir(checkpoints)  # backup removed, no worker temp left
    # Both workers end with the same weights: the non-chief logs the fingerprint the chief published.
    assert f"This worker is done (weights sha256 {metrics['weights_sha256']})" in logs[1]
    assert "results in" not in logs[1]  # the non-chief published nothing

    # The same global batch in one process learns about as well.
    single = train_in_process(tmp_path / "single", splits(fashion, 12000), model="mlp", recipe="seed",
                              batch_size=128, epochs=3)
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


def test_a_sigterm_to_one_worker_saves_the_step_on_every_worker_and_the_rerun_ends_with_the_same_weights(
        prepared_data, uninterrupted_two_workers, tmp_path):
    """Per-epoch backups (no --backup_every_steps): the signalled worker tells the other, both save the same step
    mid-epoch and exit 75 at once; the rerun of both continues at that step and ends with the uninterrupted
    2-worker run's weights, bit for bit."""
    reference = uninterrupted_two_workers[0]
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    args = (*TWO_WORKER_RUN, f"--output_dir={out}", f"--checkpoint_dir={checkpoints}", *data_flags())
    workers, logs = start_workers(args, tmp_path, "w")
    wait_for_line(logs[1], "epoch 1/3: ", workers)
    time.sleep(1.0)  # into epoch 2: one step is 20-60 ms here
    signalled = time.time()
    workers[1].send_signal(signal.SIGTERM)
    assert [w.wait(timeout=60) for w in workers] == [errors.RETRY, errors.RETRY]
    assert time.time() - signalled < 10  # well inside GKE Spot's 15 s
    saved = []
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        saved.append(re.search(r"Stopped by SIGTERM[^:]*: saved the backup at epoch (\d+), step (\d+) of 94",
                               text).groups())
    assert "Stopped by SIGTERM to another worker" in logs[0].read_text()
    assert saved[0] == saved[1]  # the same step on every worker
    epoch, step = (int(x) for x in saved[0])
    assert not (out / "metrics.json").exists()

    workers, logs = start_workers(args, tmp_path, "r")  # a rescheduled job may get new addresses
    assert wait_all(workers) == [0, 0], logs[0].read_text()[-3000:]
    continued_epoch, continued_step = divmod((epoch - 1) * 94 + step, 94)
    for log in logs:
        assert f"continuing at epoch {continued_epoch + 1}, step {continued_step + 1} of 94" in log.read_text()
    metrics = read_metrics(out)
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (continued_epoch, continued_step)
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert metrics["weights_sha256"] == reference["weights_sha256"]
    assert metrics["num_workers"] == 2
    assert not checkpoints.exists()


def test_a_worker_that_loses_its_peer_says_so_in_one_line(prepared_data, tmp_path):
    """SIGKILL to one worker (a node lost): the survivor exits 75 with the job's one line, and none of the native
    collective-abort lines TensorFlow prints."""
    out = tmp_path / "out"
    workers, logs = start_workers((*TWO_WORKER_RUN, f"--output_dir={out}", *data_flags()), tmp_path, "w")
    wait_for_line(logs[1], "epoch 1/3: ", workers)
    killed_at = time.monotonic()
    workers[1].send_signal(signal.SIGKILL)
    # The stated bound (docs/distributed.md): at the latest, the coordination service misses the peer's
    # heartbeats for distribution.HEARTBEAT_SECONDS (24.3 s measured here, idle), plus 20 s of margin for a loaded
    # machine; 120 s used to be allowed here.
    bound = distribution.HEARTBEAT_SECONDS + 20
    assert workers[0].wait(timeout=bound + 30) == errors.RETRY
    took = time.monotonic() - killed_at
    print(f"\nthe survivor left {took:.1f} s after its peer's SIGKILL (bound {bound:.0f} s)")
    assert took <= bound, f"the survivor took {took:.1f} s to leave, over the stated {bound:.0f} s"
    workers[1].wait()
    survivor = logs[0].read_text()
    after = survivor[survivor.index("epoch 1/3: "):]
    assert re.search(r"fmnist-train: error: lost contact with (worker-1|another worker)", after)
    assert "rerun every worker" in after
    assert [line for line in NATIVE_ABORT_LINES if line in after] == []
    assert "Traceback" not in survivor


def test_a_peer_that_never_comes_is_named_every_so_often_and_the_wait_ends_with_75(prepared_data, tmp_path):
    worker = start_trainer(*MLP_RUN, f"--output_dir={tmp_path / 'out'}", "--cluster_timeout=8", *data_flags(),
                           env={"TF_CONFIG": worker_tf_configs(2)[0]}, log_path=tmp_path / "w0.log")
    assert worker.wait(timeout=120) == errors.RETRY
    text = (tmp_path / "w0.log").read_text()
    assert re.search(r"Waiting for worker-1 at localhost:\d+: 5 s of --cluster_timeout=8\.", text), text[-3000:]
    assert "the cluster did not form within --cluster_timeout=8 s: no answer from worker-1 at localhost:" in text
    assert "Traceback" not in text


def test_sigterm_while_waiting_for_a_peer_exits_75_at_once(prepared_data, tmp_path):
    log = tmp_path / "w0.log"
    worker = start_trainer(*MLP_RUN, f"--output_dir={tmp_path / 'out'}", *data_flags(),
                           env={"TF_CONFIG": worker_tf_configs(2)[0]}, log_path=log)
    wait_for_line(log, "Waiting for worker-1", [worker])
    signalled = time.time()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == errors.RETRY
    assert time.time() - signalled < 3
    assert "stopped by SIGTERM outside training" in log.read_text()


def test_a_peer_lost_right_after_the_meeting_ends_the_start_up_with_75_inside_the_grace_period(
        prepared_data, tmp_path):
    """worker-0 meets worker-1 and is gone before TensorFlow's start-up (a SIGKILL in those seconds). worker-1 is
    then inside the strategy's start-up, which holds Python's lock, so a SIGTERM waits: the start-up must end by
    itself well inside Kubernetes' 30 s grace period. (It waited for --cluster_timeout, 600 s, deaf to SIGTERM.)
    worker-0 here is the test: it answers worker-1's greeting as a peer's TensorFlow server would (not JSON) and
    closes its port."""
    config = json.loads(worker_tf_configs(2)[1])
    host, port = config["cluster"]["worker"][0].rsplit(":", 1)
    log = tmp_path / "w1.log"
    with socket.create_server((host, int(port))) as peer:
        worker = start_trainer(*MLP_RUN, f"--output_dir={tmp_path / 'out'}", *data_flags(),
                               env={"TF_CONFIG": json.dumps(config)}, log_path=log)
        peer.settimeout(120)
        connection, _ = peer.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"\x00not the peer's greeting\n")
    time.sleep(2)  # worker-1 is in the strategy's start-up now
    signalled = time.time()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == errors.RETRY
    assert time.time() - signalled < 25, log.read_text()[-2000:]
    text = log.read_text()
    assert re.search(r"fmnist-train: error: (lost contact with worker-0|stopped by SIGTERM)", text), text[-2000:]
    assert "Traceback" not in text and "training epochs" not in text


def test_workers_started_with_other_settings_never_train_together(prepared_data, tmp_path):
    args = (*MLP_RUN, "--train_examples=3000", "--epochs=1", f"--output_dir={tmp_path / 'out'}", *data_flags())
    workers, logs = start_workers(args, tmp_path, "w", extra={1: ("--learning_rate=0.002",)})
    assert wait_all(workers, timeout=120) == [errors.PERMANENT, errors.PERMANENT]
    for log, (here, there) in zip(logs, (("0.001", "0.002"), ("0.002", "0.001"))):
        text = log.read_text()
        assert f"runs with other settings: --learning_rate={there} there, --learning_rate={here} here" in text
        assert "training epochs" not in text and "Traceback" not in text
