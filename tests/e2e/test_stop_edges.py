"""A stop at the edges of training, with many workers (issue 26): the timing injected with the test-only
FMNIST_TEST_PAUSES (trainer/resilience/pauses.py), real processes."""

import signal
import time

import pytest

from support.data import data_flags
from support.processes import read_metrics, start_trainer, start_workers, wait_all, wait_for_line, worker_tf_configs
from trainer import errors
from trainer.resilience import peers

pytestmark = pytest.mark.e2e

SHORT = ("--model=mlp", "--recipe=seed", "--batch_size=128", "--train_examples=2000", "--epochs=2")


def test_a_sigterm_in_the_last_vote_stops_every_worker_with_75_and_the_rerun_finishes(prepared_data, tmp_path):
    """The last vote is slow on purpose; SIGTERM to worker 1 lands in it. Both workers stop at the last epoch's
    end (one more vote carries the request), 75; the rerun trains nothing and publishes. (Before: the request was
    wiped, both evaluated and published, and the grace period's SIGKILL ended the signalled one.)"""
    out = tmp_path / "out"
    args = (*SHORT, f"--output_dir={out}", *data_flags())
    workers, logs = start_workers(args, tmp_path, "w", env={"FMNIST_TEST_PAUSES": "last-vote=2"})
    wait_for_line(logs[1], "test pause: last-vote", workers, timeout=240)
    time.sleep(0.5)
    signalled = time.time()
    workers[1].send_signal(signal.SIGTERM)
    assert wait_all(workers, timeout=60) == [errors.RETRY, errors.RETRY], logs[0].read_text()[-2000:]
    assert time.time() - signalled < 10
    for log in logs:
        assert "saved the backup at epoch 2, step 16 of 16" in log.read_text()
    assert not (out / "metrics.json").exists()
    workers, logs = start_workers(args, tmp_path, "r")
    assert wait_all(workers, timeout=300) == [0, 0], logs[0].read_text()[-2000:]
    assert read_metrics(out)["resumed_from_epoch"] == 2


@pytest.mark.parametrize("moment, victim", [("data", 0), ("evaluation", 1), ("export", 0)])
def test_a_sigterm_outside_fit_stops_every_worker_within_seconds(prepared_data, tmp_path, moment, victim):
    """SIGTERM to one worker in data loading, evaluation or export (each made slow on purpose): the signalled
    worker tells the others through the coordination service and every worker exits 75 within
    peers.STOP_REACHES_EVERY_WORKER_SECONDS. (Before: only the signalled one stopped; the other went on, or waited
    in a collective until TensorFlow gave up.)"""
    args = (*SHORT, f"--output_dir={tmp_path / 'out'}", *data_flags())
    workers, logs = start_workers(args, tmp_path, "w", env={"FMNIST_TEST_PAUSES": f"{moment}=4"})
    wait_for_line(logs[victim], f"test pause: {moment}", workers, timeout=240)
    time.sleep(0.5)
    signalled = time.time()
    workers[victim].send_signal(signal.SIGTERM)
    statuses = wait_all(workers, timeout=60)
    took = time.time() - signalled
    texts = [log.read_text() for log in logs]
    assert statuses == [errors.RETRY, errors.RETRY], texts[1 - victim][-2000:]
    assert took < peers.STOP_REACHES_EVERY_WORKER_SECONDS, took
    assert f"stopped by SIGTERM to worker-{victim} outside training" in texts[1 - victim]
    assert all("Traceback" not in text for text in texts)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_worker_still_exporting_when_the_chief_has_published_finishes_with_0(prepared_data, tmp_path):
    """Worker 1's export is slow on purpose, so the chief publishes first. The chief hosts the coordination
    service: leaving at once, it looked like a lost chief to worker 1, which exited 75 ("lost contact with the
    coordination service ... outside training", seen in CI). Now the chief waits for the others' word
    (peers.StopBroadcast.finish) and both exit 0."""
    out = tmp_path / "out"
    args = (*SHORT, f"--output_dir={out}", *data_flags())
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [start_trainer(*args, env={"TF_CONFIG": config, "FMNIST_TEST_PAUSES": pauses}, log_path=log)
               for config, log, pauses in zip(worker_tf_configs(2), logs, ("", "export=6"))]
    assert wait_all(workers, timeout=300) == [0, 0], logs[1].read_text()[-2000:]
    assert "This worker is done" in logs[1].read_text() and (out / "metrics.json").exists()
