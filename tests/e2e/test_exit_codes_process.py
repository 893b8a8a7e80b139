"""The exit-code contract from a real trainer process: 0 finished, 2 a mistake a retry cannot fix, 75 retry me
(tests/unit/test_exit_codes.py: the same contract in-process)."""

import signal
import subprocess
import sys
import time

import pytest

from support.data import ROOT, data_flags
from support.processes import clean_env, run_trainer, start_trainer, wait_for_line


# A bug planted in a real trainer process, through the command line's own entry point: the trainer's code stays
# free of test seams. It strikes after training, where only a bug could raise this.
PLANTED_BUG = """
import sys
from trainer.commands import train as command
from trainer.training import train

def weights_fingerprint(model):
    raise ZeroDivisionError("a bug planted by tests/e2e/test_exit_codes_process.py")

train.weights_fingerprint = weights_fingerprint
sys.argv = ["fmnist-train", *sys.argv[1:]]
command.run()
"""


TINY = ("--model=mlp", "--recipe=seed", "--train_examples=512", "--epochs=1")


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
    assert "ZeroDivisionError: a bug planted by tests/e2e/test_exit_codes_process.py" in crashed.stderr
    assert "fmnist-train: error:" not in crashed.stderr and not (out / "metrics.json").exists()
    assert (out / "checkpoints" / "chief").is_dir()

    # 0: the rerun (without the bug) resumes from that backup and finishes.
    finished = run_trainer(*args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "continuing at epoch 2" in finished.stderr and (out / "metrics.json").is_file()


def test_a_sigterm_after_the_result_is_published_never_ends_the_run_by_the_signal(prepared_data, tmp_path):
    """The result is out ("Test accuracy", metrics.json written): a SIGTERM then has nothing to save, and the run
    still ends by the contract (0, or 75 a moment before the end), not killed by the signal (-15: the default
    action, once the interpreter's shutdown had put it back, every time here before the fix)."""
    statuses = []
    for delay in (0.2, 0.6):
        log = tmp_path / f"finished-{delay}.log"
        process = start_trainer(*TINY, f"--output_dir={tmp_path / str(delay)}", *data_flags(), log_path=log)
        wait_for_line(log, "Test accuracy", process)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        statuses.append(process.wait(timeout=60))
        assert (tmp_path / str(delay) / "metrics.json").is_file()
    assert set(statuses) <= {0, 75}, statuses
