"""The lease tells two pods apart: host name and pid are shared by the pods of an Indexed Job (<job>-<index>,
PID 1 each), so the owner is a token with the pod's UID, the boot id and the PID namespace."""

import json
import os
import subprocess
import sys
import time

import pytest

from support.data import ROOT, data_flags
from support.processes import clean_env, wait_for_line
from trainer import errors
from trainer.errors import RetryableError
from trainer.resilience import lease


def hold(folder, **changes):
    """A lease as a live process like this one wrote it, with `changes`."""
    folder.mkdir(exist_ok=True)
    record = {"owner": "another", "host": os.uname().nodename, "pid": os.getpid(), **lease.whereabouts(),
              "expires": time.time() + 60, **changes}
    (folder / ".lease-single").write_text(json.dumps(record))


def test_the_same_host_name_and_pid_in_another_pid_namespace_is_another_pod(tmp_path):
    hold(tmp_path, pid_ns="pid:[1]")  # another container, same host name, same pid (PID 1 in both)
    with pytest.raises(RetryableError, match="another instance of this job holds the backup.*PID namespace pid:"):
        lease.Lease(str(tmp_path), "single").acquire()


def test_another_pod_with_the_same_host_name_is_turned_away(tmp_path, monkeypatch):
    monkeypatch.setenv("POD_UID", "pod-b")
    hold(tmp_path, pod_uid="pod-a")
    with pytest.raises(RetryableError, match="pod pod-a"):
        lease.Lease(str(tmp_path), "single").acquire()


def test_this_pods_earlier_container_and_this_containers_earlier_process_are_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("POD_UID", "pod-a")
    hold(tmp_path, pod_uid="pod-a", pid_ns="pid:[1]")  # the container restarted: a new PID namespace
    lease.Lease(str(tmp_path), "single").acquire().release()
    hold(tmp_path, pod_uid="pod-a")  # this container, this pid, another token: an earlier process, gone
    lease.Lease(str(tmp_path), "single").acquire().release()


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
