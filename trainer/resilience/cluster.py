"""Cluster start-up: every worker finds the others, in bounded time, and trains only with workers of its settings.

MultiWorkerMirroredStrategy's start-up waits for the peers inside TensorFlow's C++ runtime, holding Python's global
lock: while it waits, no Python thread runs, so nothing can say who is missing, keep a deadline, or act on
SIGTERM (and TensorFlow's own SIGTERM handler takes the signal). So the workers meet first, in Python: each
listens on its own cluster address, connects to every peer's, and the two exchange their training settings. Once
a worker has met every peer (in either direction), it closes its listener and creates the strategy, which then
finds everyone up. While it waits, a line every WAIT_LINE_SECONDS (the first after 5 s) names who is missing;
after --cluster_timeout seconds it gives up ("retry me"); a SIGTERM is handled at once (the signal watcher runs).
Workers whose training settings differ (a rollout that changed a flag on some pods) would train different models,
or hang in mismatched collectives: both sides of the exchange see the difference, and each stops with one line
naming the flag.
"""

import json
import socket
import threading
import time

from absl import logging

from trainer import recipes, settings
from trainer.errors import RetryableError, UserError

FIRST_WAIT_LINE_SECONDS = 5.0   # the first line about who is missing, then one every WAIT_LINE_SECONDS
WAIT_LINE_SECONDS = 30.0
PROBE_SECONDS = 0.5       # between two rounds of connecting to the peers not met yet
CONNECT_SECONDS = 2.0
# How long the strategy's own start-up, after the meeting, may wait for every peer to register with TensorFlow's
# coordination service. The peers were all up a moment before, so this bounds only a peer lost in between; and that
# wait is inside TensorFlow, holding Python's lock, where a SIGTERM waits for it to end: 15 s keeps the SIGTERM's
# exit (75) inside Kubernetes' 30 s grace period (seen: a worker whose peer was SIGKILLed there hung for the whole
# --cluster_timeout, 600 s, deaf to SIGTERM).
REGISTER_SECONDS = 15.0
# The job's settings that do not change training: where things are read and written, how long to wait.
LOCAL_SETTINGS = ("output_dir", "checkpoint_dir", "tensorboard_dir", "data_dir", "tfds_manual_dir", "overwrite",
                  "cluster_timeout")
LOCAL_RECIPE_SETTINGS = ("threads_per_op",)  # not applied under many workers


def training_settings(cfg):
    """{flag name: value} of every setting that changes what the workers train (a config.RunConfig's, resolved)."""
    values = {name: value for name, value in vars(cfg.job).items() if name not in LOCAL_SETTINGS}
    for declared in settings.declared(recipes.Recipe):
        if declared.name not in LOCAL_RECIPE_SETTINGS:
            value = cfg.recipe
            for part in declared.path:
                value = getattr(value, part)
            values[declared.name] = value
    return json.loads(json.dumps(values))  # as the peers see them


def tasks(tf_config):
    """[(task name, "host:port")] of the chief and worker tasks: the ones MultiWorkerMirroredStrategy connects."""
    cluster = tf_config.get("cluster", {})
    return [(f"{job}-{index}", address) for job in ("chief", "worker")
            for index, address in enumerate(cluster.get(job, []))]


class ClusterStartup:
    """Meets every peer of `tf_config` before the strategy starts; see the module docstring.

    `own`: this task's settings (training_settings); `timeout_seconds`: 0 waits forever.
    """

    def __init__(self, tf_config, own, timeout_seconds):
        task = tf_config.get("task", {})
        self.name = f"{task.get('type')}-{int(task.get('index', 0))}"
        everyone = tasks(tf_config)
        self.address = dict(everyone)[self.name]
        self.peers = {name: address for name, address in everyone if name != self.name}
        self.own, self.timeout_seconds = own, timeout_seconds
        self.met = set()
        self.mismatch = None
        self._lock = threading.Lock()
        self._listener = None

    def form(self):
        """Returns once every peer was met; raises UserError (settings differ) or RetryableError (timed out)."""
        self._listen()
        try:
            started = time.monotonic()
            next_line = started + FIRST_WAIT_LINE_SECONDS
            while True:
                for name in self.missing():
                    self._visit(name)
                if self.mismatch:
                    raise UserError(self.mismatch)
                if not self.missing():
                    return
                now = time.monotonic()
                if self.timeout_seconds and now - started >= self.timeout_seconds:
                    raise RetryableError(
                        f"the cluster did not form within --cluster_timeout={self.timeout_seconds:g} s: no answer "
                        f"from {self._named(self.missing())} (a pod not scheduled, an image still pulling, a wrong "
                        "host name?). Rerun every worker; the backup, if any, is kept.")
                if now >= next_line:
                    next_line += WAIT_LINE_SECONDS
                    limit = f"--cluster_timeout={self.timeout_seconds:g}" if self.timeout_seconds else "no timeout"
                    logging.info("Waiting for %s: %d s of %s.", self._named(self.missing()), now - started, limit)
                time.sleep(PROBE_SECONDS)
        finally:
            self._close()

    def missing(self):
        with self._lock:
            return [name for name in self.peers if name not in self.met]

    def _named(self, names):
        return ", ".join(f"{name} at {self.peers[name]}" for name in names)

    # ---- the exchange: one JSON line each way --------------------------------------------------------------------

    def _hello(self):
        return (json.dumps({"task": self.name, "settings": self.own}) + "\n").encode()

    def _meet(self, name, peer_settings):
        with self._lock:
            self.met.add(name)
            if self.mismatch is None and peer_settings is not None:
                self.mismatch = self._difference(name, peer_settings)

    def _difference(self, name, theirs):
        for flag, value in self.own.items():
            if theirs.get(flag) != value:
                return (f"{name} runs with other settings: --{flag}={_shown(theirs.get(flag))} there, "
                        f"--{flag}={_shown(value)} here. Every worker must run the same command: start them all "
                        "again with the same flags.")
        return None

    def _visit(self, name):
        host, port = self.peers[name].rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as connection:
                connection.sendall(self._hello())
                reply = _read_line(connection)
        except OSError:  # not there yet: refused, unknown host (a pod not scheduled), a timeout
            return
        try:
            message = json.loads(reply)
        except ValueError:
            # Something else answers there: the peer's TensorFlow server, started once it had met this worker.
            self._meet(name, None)
            return
        self._meet(name, message.get("settings"))

    def _listen(self):
        port = int(self.address.rsplit(":", 1)[1])
        if socket.has_dualstack_ipv6():  # every address of this host, IPv4 and IPv6, as TensorFlow's server
            self._listener = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            self._listener = socket.create_server(("", port))
        self._listener.settimeout(PROBE_SECONDS)
        self._server = threading.Thread(target=self._serve, args=(self._listener,), name="cluster-startup",
                                        daemon=True)
        self._server.start()

    def _serve(self, listener):
        while True:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                if listener.fileno() < 0:
                    return
                continue
            except OSError:  # closed: the strategy takes the port over
                return
            with connection:
                try:
                    connection.settimeout(CONNECT_SECONDS)
                    message = json.loads(_read_line(connection))
                    connection.sendall(self._hello())
                    _read_line(connection)  # the peer closes first: its side keeps the TIME_WAIT, not this port
                except (OSError, ValueError):
                    continue
                self._meet(message.get("task"), message.get("settings"))

    def _close(self):
        """Frees the port for TensorFlow's server: the accepting thread must let go of it too."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._server.join(timeout=5)
            self._listener = None


def _read_line(connection):
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _shown(value):
    return str(value).lower() if isinstance(value, bool) or value is None else value
