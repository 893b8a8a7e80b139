"""Two trainer processes with one host name, each PID 1 (`unshare --pid --uts`, as two pods of an Indexed Job):
the second is turned away (tests/unit/test_lease.py: the lease's rules in-process)."""

import json
import subprocess
import sys

import pytest

from support.data import ROOT, data_flags
from support.processes import clean_env, wait_for_line
from trainer import errors


@pytest.mark.e2e
def test_two_trainers_with_one_host_name_each_pid_1_the_second_is_turned_away(prepared_data, tmp_path):
    if subprocess.run(["unshare", "--pid", "--uts", "--fork", "true"]).returncode:
        pytest.fail("unshare cannot make PID and UTS namespaces here (the tests run as root)")
    args = ["--model=mlp", "--recipe=seed", "--train_examples=8000", "--epochs=20", f"--output_dir={tmp_path / 'o'}",
            f"--checkpoint_dir={tmp_path / 'backup'}", *data_flags()]

    def pod(log):  # PID 1 in a PID namespace of its own, host name fmnist-train-0, as a pod of an Indexed Job
        script = 'hostname fmnist-train-0 && exec "$@"'
        return subprocess.Popen(["unshare", "--pid", "--uts", "--fork", "--kill-child", "sh", "-c", script, "sh",
                                 sys.executable, "-m", "trainer.task", *args], cwd=ROOT, env=clean_env(),
                                stdout=open(log, "w"), stderr=subprocess.STDOUT)
    first = pod(tmp_path / "first.log")
    try:
        wait_for_line(tmp_path / "first.log", "epoch 1/20: ", first)
        held = json.loads((tmp_path / "backup" / ".lease-single").read_text())
        assert (held["pid"], held["host"]) == (1, "fmnist-train-0"), held
        second = pod(tmp_path / "second.log")
        assert second.wait(timeout=120) == errors.RETRY, (tmp_path / "second.log").read_text()[-3000:]
        text = (tmp_path / "second.log").read_text()
        assert "another instance of this job holds the backup" in text and "pid 1, PID namespace" in text, text
        assert first.poll() is None  # the first goes on training
    finally:
        first.kill()
        first.wait(timeout=30)
