"""Preemption as the launchers ship it, as processes: per-epoch backups (no --backup_every_steps) and a recipe that
runs many steps per call into the train function, stopped by SIGTERM in the middle of an epoch.

tests/test_faults.py stops a run with `--backup_every_steps` and one step per execution; this file pins what every
launcher actually runs (per-epoch backups, the fast recipe's 64 steps per execution), and the exit-code contract
of the README.
"""

import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_ok, clean_env, data_flags, read_metrics, run_trainer, start_trainer
from trainer import errors

pytestmark = pytest.mark.e2e

# The fast recipe (64 steps per execution) on a CNN: 24,000 examples at batch 128 are 188 steps an epoch, three
# executions (64, 64, 60) of about a second each here, so a SIGTERM sent just after "Epoch 2/2" lands inside the
# epoch's first or second execution: mid-epoch, at no backup boundary (the per-epoch backup is at step 188).
STEPS_PER_EPOCH, STEPS_PER_EXECUTION = 188, 64
FAST = ("--model=cnn", "--recipe=fast", "--train_examples=24000", "--epochs=2")


def wait_for_line(path, text, process, timeout=300):
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert process.poll() is None, f"the trainer exited before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {text!r} in time"
        time.sleep(0.02)


def test_sigterm_mid_epoch_with_per_epoch_backups_saves_the_step_and_the_rerun_ends_with_the_same_weights(
        prepared_data, tmp_path):
    uninterrupted = run_trainer(*FAST, f"--output_dir={tmp_path / 'uninterrupted'}", *data_flags())
    assert_ok(uninterrupted)
    reference = read_metrics(tmp_path / "uninterrupted")

    out = tmp_path / "out"
    args = (*FAST, f"--output_dir={out}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "Epoch 2/2", first)
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
