"""One instance at a time: a lease in the backup folder turns a second instance of the same job away.

Two instances of one job at once (a duplicate pod, a rerun while the old process still finishes) would write one
backup. Each task holds its own lease, renewed while it runs; a dead instance's lease expires.

The owner is a random token of the process's own, with what says where it runs (`whereabouts`): the pod's UID
(the downward API's POD_UID, set by k8s/base/job.yaml), the host's boot id and the PID namespace. Host name and pid
cannot tell two pods apart: the pods of an Indexed Job share the host name <job>-<index>, and the trainer is PID 1
in each. A held lease is taken for free at once only where that is provable: the same container (boot id, PID
namespace and pod) whose process is gone, or a pod's earlier container (the kubelet runs one at a time); any other
holder's lease is free once it expires.
"""

import json
import os
import socket
import threading
import time
import uuid

import tensorflow as tf
from absl import logging

from trainer.errors import RetryableError
from trainer.storage.files import remove_if_empty, write_json

LEASE_SECONDS = 30.0         # a lease not renewed for this long belongs to a dead instance
LEASE_RENEW_SECONDS = 10.0


class Lease:
    """This instance's claim on the backup folder, renewed while it runs.

    `name` tells the tasks of one job apart (each worker holds its own). On the same host, a lease whose process
    is gone is free at once; elsewhere it expires LEASE_SECONDS after its last renewal.
    """

    def __init__(self, checkpoint_dir, name):
        self.path = f"{checkpoint_dir.rstrip('/')}/.lease-{name}"
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), **whereabouts()}
        self._stop = threading.Event()
        self._thread = None

    def acquire(self):
        held = self._read()
        if held and held.get("owner") != self.record["owner"] and self._alive(held):
            raise RetryableError(
                f"another instance of this job holds the backup in {os.path.dirname(self.path)} (host "
                f"{held.get('host')}, pid {held.get('pid')}{described(held)}): a duplicate pod, or a rerun started "
                f"before the old run ended. Retry once it has stopped; if it died, its lease expires by "
                f"{time.strftime('%H:%M:%S UTC', time.gmtime(held.get('expires', 0)))}.")
        try:
            self._write()
        except tf.errors.OpError as error:
            raise RetryableError(f"cannot write the lease on the backup in {os.path.dirname(self.path)} "
                                 f"({type(error).__name__}): retry.") from None
        if (self._read() or {}).get("owner") != self.record["owner"]:  # another instance wrote at the same moment
            raise RetryableError(f"another instance of this job claimed the backup in "
                                 f"{os.path.dirname(self.path)} at the same moment: retry.")
        self._thread = threading.Thread(target=self._renew, name="backup-lease", daemon=True)
        self._thread.start()
        return self

    def release(self):
        """Gives the lease up. The renewal thread is joined first: a thread still inside a gs:// write when the
        interpreter exits aborts the process (SIGABRT, "exception not rethrown"), and it would renew after this."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=LEASE_RENEW_SECONDS * 3)
        try:
            if (self._read() or {}).get("owner") == self.record["owner"]:
                tf.io.gfile.remove(self.path)
            remove_if_empty(os.path.dirname(self.path))
        except tf.errors.OpError:
            pass

    def _alive(self, held):
        mine = self.record
        same_pod = bool(mine.get("pod_uid")) and held.get("pod_uid") == mine["pod_uid"]
        same_container = (held.get("host") == mine["host"] and held.get("boot_id") == mine["boot_id"] is not None
                          and held.get("pid_ns") == mine["pid_ns"] is not None
                          and held.get("pod_uid") == mine.get("pod_uid"))
        if same_container:
            if held.get("pid") == mine["pid"]:
                return False  # this very pid, with another token: an earlier process of this container, gone
            try:
                os.kill(int(held.get("pid")), 0)
            except (ProcessLookupError, ValueError, TypeError):
                return False
            except PermissionError:
                return True
            return True
        if same_pod:
            return False  # this pod's earlier container: the kubelet runs one at a time, so it has ended
        return held.get("expires", 0) > time.time()

    def _read(self):
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.load(f)
        except (tf.errors.OpError, ValueError):
            return None

    def _write(self):
        write_json(self.path, {**self.record, "expires": time.time() + LEASE_SECONDS})

    def _renew(self):
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                self._write()
            except tf.errors.OpError as error:
                logging.warning("Could not renew the lease on %s: %s", self.path, type(error).__name__)


def whereabouts():
    """{pod_uid, boot_id, pid_ns} of this process: what two pods, or two containers on one node, cannot share."""
    def read(path, link=False):
        try:
            return os.readlink(path) if link else open(path).read().strip()
        except OSError:
            return None
    return {"pod_uid": os.environ.get("POD_UID") or None, "boot_id": read("/proc/sys/kernel/random/boot_id"),
            "pid_ns": read("/proc/self/ns/pid", link=True)}


def described(held):
    return f", pod {held['pod_uid']}" if held.get("pod_uid") else (
        f", PID namespace {held['pid_ns']}" if held.get("pid_ns") else "")
