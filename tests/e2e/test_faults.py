"""What clusters do to jobs, as processes: SIGTERM saves the step in progress and says "retry me", a rerun
resumes mid-epoch; a second instance is turned away. The damaged backups are in test_backup.py (in-process); the
fault soak (kills at random moments) is tests/e2e/fault_soak.py, a step of `make test` of its own."""

import re
import signal
import time

import pytest

from support.data import data_flags
from support.processes import assert_ok, read_metrics, run_trainer, start_trainer, wait_for_line
from trainer import errors

pytestmark = pytest.mark.e2e

# Many short epochs: the run is still training after a second instance has started and been turned away.
RUN = ("--model=mlp", "--recipe=seed", "--batch_size=64", "--train_examples=6000", "--epochs=25",
       "--backup_every_steps=20")




def test_sigterm_saves_the_step_in_progress_and_the_rerun_continues_mid_epoch(prepared_data, tmp_path):
    out = tmp_path / "out"
    args = (*RUN, f"--output_dir={out}", *data_flags())
    log = tmp_path / "first.log"
    first = start_trainer(*args, log_path=log)
    wait_for_line(log, "epoch 1/25: ", first)  # epoch 2 is being trained

    # A second instance of the same job (a duplicate pod, an early rerun) is turned away while the first runs.
    second = run_trainer(*args)
    assert second.returncode == errors.RETRY, second.stderr
    assert "another instance of this job holds the backup" in second.stderr and "Traceback" not in second.stderr
    assert first.poll() is None

    signalled = time.time()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == errors.RETRY
    assert time.time() - signalled < 10
    text = log.read_text()
    assert "Traceback" not in text and "Stopped by SIGTERM: saved the backup at epoch " in text
    assert not (out / "metrics.json").exists()
    epoch, step = (int(x) for x in re.search(r"saved the backup at epoch (\d+), step (\d+)", text).groups())

    continued_epoch, continued_step = divmod((epoch - 1) * 94 + step, 94)  # 0-based: after step 94, the next epoch

    rerun = run_trainer(*args)
    assert_ok(rerun)
    assert f"continuing at epoch {continued_epoch + 1}, step {continued_step + 1} of 94" in rerun.stderr
    metrics = read_metrics(out)
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (continued_epoch, continued_step)
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 26))
    assert not (out / "checkpoints").exists()

    again = run_trainer(*args)  # the same command once more: already finished, nothing to do
    assert_ok(again)
    assert "already holds the finished result of this command" in again.stderr
