"""The lease tells two pods apart: host name and pid are shared by the pods of an Indexed Job (<job>-<index>,
PID 1 each), so the owner is a token with the pod's UID, the boot id and the PID namespace."""

import json
import os
import time

import pytest

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
