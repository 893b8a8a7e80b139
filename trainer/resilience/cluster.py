"""Cluster start-up: every worker finds the others, in bounded time, and trains only with workers of its settings.

MultiWorkerMirroredStrategy's start-up waits for the peers inside TensorFlow's C++ runtime, holding Python's global
lock: while it waits, no Python thread runs, so nothing can say who is missing, keep a deadline, or act on
SIGTERM (and TensorFlow's own SIGTERM handler takes the signal). So the workers meet first, in Python: each
listens on its own cluster address, connects to every peer's, and the two exchange their training settings. Once
a worker has met every peer (in either direction), it closes its listener and creates the strategy, which then
finds everyone up. While it waits, a line every WAIT_LINE_SECONDS (the first after 5 s) names who is missing;
after --cluster_timeout seconds it gives up ("retry me"); a SIGTERM is handled at once (the signal watcher runs).
Workers whose training settings differ (a rollout that changed a flag on some pods, a node of another CPU that
resolves --precision=auto otherwise) would train different models, or hang in mismatched collectives: both sides
of the exchange see the difference, and each stops with one line naming it (`difference`: exit 2, or 75 where the
host decides it).

Anyone on the pod network can reach the port, so a stranger must neither form the job nor fail it nor stall it.
An inbound hello is only a claim: the listener calls the claimed peer back at its TF_CONFIG address ("is this
your visit, with this nonce?") and, where the job shares a secret (meeting.load_secret), each side also proves
it over both sides' fresh nonces. Settings go only to a visitor so verified, and only after its own. Every
message is bounded (meeting.py); connections are handled concurrently, a few per address, each within one
deadline; anything malformed is dropped with at most one log line per address.
"""

import json
import socket
import threading
import time

from absl import logging

from trainer.config import recipes, declare
from trainer.errors import RetryableError, UserError
from trainer.resilience import meeting
from trainer.resilience.meeting import Dropped

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
MAX_CONNECTIONS = 32         # handled at once; each ends within meeting.CONNECTION_SECONDS
MAX_PER_HOST = 4             # of them from one address: a peer needs 2 (its visit, its call-back)
MAX_LOGGED_ADDRESSES = 256   # a line for the first drop from each, then one line for all the others
# The job's settings that do not change training: where things are read and written, how long to wait. The backup
# folder is not among them: workers that each kept a backup of their own would resume from different ones.
LOCAL_SETTINGS = ("output_dir", "tensorboard_dir", "data_dir", "tfds_manual_dir", "overwrite", "cluster_timeout",
                  "cluster_secret_file", "metrics_address")
LOCAL_RECIPE_SETTINGS = ("threads_per_op",)  # not applied under many workers
# What the flags resolve to on this host, compared after the flags: {name: whether the host decides it}. A
# difference the host decides (--precision=auto is bfloat16 on a CPU with AVX512_BF16 or an Ampere GPU, float32
# elsewhere; the GPUs a worker has) is "retry me", 75: a rerun may land on matching nodes, and the node pool is
# the operator's to fix. The others are the command's or the image's (exit 2).
RESOLVED = {"resolved precision": True, "replicas per worker": True, "strategy kind": False, "global batch": False,
            "TensorFlow version": False, "tf-keras version": False}


def training_settings(cfg):
    """{name: value} of every setting that changes what the workers train: the flags (a config.RunConfig's,
    resolved by its recipe), then what they resolve to on this host (RESOLVED)."""
    import tensorflow as tf
    import tf_keras
    from trainer.training import distribution, precision
    values = {name: value for name, value in vars(cfg.job).items() if name not in LOCAL_SETTINGS}
    for declared in declare.declared(recipes.Recipe):
        if declared.name not in LOCAL_RECIPE_SETTINGS:
            value = cfg.recipe
            for part in declared.path:
                value = getattr(value, part)
            values[declared.name] = value
    values.update({
        "resolved precision": precision.resolve(cfg.job.precision, cfg.recipe.mixed_precision),
        "replicas per worker": max(1, len(tf.config.list_physical_devices("GPU"))),
        "strategy kind": distribution.resolved_name(cfg.job.strategy, distribution.cluster_spec_from_env()),
        "global batch": cfg.recipe.batch_size,
        "TensorFlow version": tf.__version__,
        "tf-keras version": tf_keras.__version__,
    })
    return json.loads(json.dumps(values))  # as the peers see them


def difference(name, own, theirs):
    """The first setting in which peer `name`'s `theirs` differs from `own`, as the error to stop with (UserError:
    a flag or the image, RetryableError: the host), or None."""
    for setting, value in own.items():
        if theirs.get(setting) == value:
            continue
        if setting not in RESOLVED:
            return UserError(f"{name} runs with other settings: --{setting}={_shown(theirs.get(setting))} there, "
                             f"--{setting}={_shown(value)} here. Every worker must run the same command: start "
                             "them all again with the same flags.")
        if RESOLVED[setting]:
            fix = ("pin it with --precision=float32" if setting == "resolved precision"
                   else "give every worker the same GPUs")
            return RetryableError(
                f"{name} would train with another {setting}: {_shown(theirs.get(setting))} there, {_shown(value)} "
                f"here, from the same flags: the hosts differ (a node pool of mixed CPUs or GPUs). Rerun on "
                f"matching nodes, or {fix}.")
        return UserError(f"{name} would train with another {setting}: {_shown(theirs.get(setting))} there, "
                         f"{_shown(value)} here. Every worker must run the same image and command: start them all "
                         "again alike.")
    return None


def tasks(tf_config):
    """[(task name, "host:port")] of the chief and worker tasks: the ones MultiWorkerMirroredStrategy connects."""
    cluster = tf_config.get("cluster", {})
    return [(f"{job}-{index}", address) for job in ("chief", "worker")
            for index, address in enumerate(cluster.get(job, []))]


class ClusterStartup:
    """Meets every peer of `tf_config` before the strategy starts; see the module docstring.

    `own`: this task's settings (training_settings); `timeout_seconds`: 0 waits forever; `secret`: a
    meeting.Secret (None: none set up, peers verified by call-back alone).
    """

    def __init__(self, tf_config, own, timeout_seconds, secret=None):
        task = tf_config.get("task", {})
        self.name = f"{task.get('type')}-{int(task.get('index', 0))}"
        everyone = tasks(tf_config)
        self.address = dict(everyone)[self.name]
        self.peers = {name: address for name, address in everyone if name != self.name}
        self.own, self.timeout_seconds = own, timeout_seconds
        self.secret = secret if secret is not None else meeting.Secret(None)
        self.met = set()
        self.mismatch = None
        self._lock = threading.Lock()
        self._listener = None
        self._visiting = {}  # peer name: the nonce of this worker's visit in progress, what a call-back confirms
        self._open = meeting.Admission(MAX_CONNECTIONS, MAX_PER_HOST)  # accepted connections, each in a thread
        self._said = meeting.DropLog(MAX_LOGGED_ADDRESSES)
        self._closing = False

    def form(self):
        """Returns once every peer was met; raises UserError (settings differ) or RetryableError (timed out)."""
        logging.info("Meeting %s on %s: %s.", self._named(self.peers), self.address,
                     "every exchange proven with the job's secret" if self.secret else
                     "no secret set up (FMNIST_CLUSTER_SECRET_FILE), peers verified by calling them back")
        self._listen()
        try:
            started = time.monotonic()
            next_line = started + FIRST_WAIT_LINE_SECONDS
            while True:
                for name in self.missing():
                    self._visit(name)
                if self.mismatch:
                    raise self.mismatch
                if not self.missing():
                    return
                now = time.monotonic()
                if self.timeout_seconds and now - started >= self.timeout_seconds:
                    raise RetryableError(
                        f"the cluster did not form within --cluster_timeout={self.timeout_seconds:g} s: no answer "
                        f"from {self._named(self.missing())} (a pod not scheduled, an image still pulling, a wrong "
                        "host name, a secret that differs?). Rerun every worker; the backup, if any, is kept.")
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

    # ---- the verdict: each side sends its settings dict, both compare ---------------------------------------------

    def _meet(self, name, peer_settings):
        with self._lock:
            self.met.add(name)
            if self.mismatch is None and peer_settings is not None:
                self.mismatch = self._difference(name, peer_settings)

    def _difference(self, name, theirs):
        return difference(name, self.own, theirs)

    def _drop(self, source, reason, name=None):
        """Logged once per address; silent about an exchange cut short once its peer was met (two visits crossing)
        or the meeting is over."""
        with self._lock:
            quiet = self._closing or name in self.met
        if not quiet:
            self._said.say(source, reason)

    # ---- visiting a peer at its TF_CONFIG address --------------------------------------------------------------

    def _visit(self, name):
        host, port = self.peers[name].rsplit(":", 1)
        mine = meeting.nonce()
        with self._lock:
            self._visiting[name] = mine
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as connection:
                until = meeting.deadline()
                meeting.send(connection, {"type": "hello", "task": self.name, "nonce": mine}, until)
                line = meeting.read_line(connection, until)
                if meeting.is_tensorflow_server(line):  # the peer met this worker and moved on
                    self._meet(name, None)
                    return
                challenge = meeting.parse(line, "challenge")
                if challenge["task"] != name:
                    raise Dropped(f"an answer from {challenge['task']!r}, not {name}")
                theirs = challenge["nonce"]
                self.secret.check(challenge["proof"], "challenge", self.name, name, mine, theirs)
                meeting.send(connection, {"type": "settings", "settings": self.own, "proof": self.secret.proof(
                    "visitor", self.name, name, mine, theirs, self.own)}, until)
                reply = meeting.parse(meeting.read_line(connection, until), "settings")
                self.secret.check(reply["proof"], "listener", self.name, name, mine, theirs, reply["settings"])
        except Dropped as error:
            self._drop(f"{name} at {self.peers[name]}", str(error), name)
            return
        except OSError:  # not there yet: refused, unknown host (a pod not scheduled), a timeout
            return
        finally:
            with self._lock:
                self._visiting.pop(name, None)
        self._meet(name, reply["settings"])

    # ---- the listener: a visitor is verified before it hears anything ------------------------------------------

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
                connection, address = listener.accept()
            except socket.timeout:
                if listener.fileno() < 0:
                    return
                continue
            except OSError:  # closed: the strategy takes the port over
                return
            host = str(address[0])
            if not self._admit(connection, host):
                meeting.close_quietly(connection)
                self._drop(host, "a connection over the limit of connections at once")
                continue
            try:
                threading.Thread(target=self._handle, args=(connection, host), name="cluster-meeting",
                                 daemon=True).start()
            except RuntimeError:  # no thread to be had: as if over the limit
                self._release(connection, host)

    def _admit(self, connection, host):
        with self._lock:
            return not self._closing and self._open.admit(connection, host)

    def _release(self, connection, host):
        self._open.release(connection, host)
        meeting.close_quietly(connection)

    def _handle(self, connection, host):
        until, name = meeting.deadline(), None
        try:
            message = meeting.parse(meeting.read_line(connection, until), "hello", "confirm")
            if message["type"] == "confirm":  # a peer checks that a hello it got came from this worker
                with self._lock:
                    ok = self._visiting.get(message["task"]) == message["nonce"]
                meeting.send(connection, {"type": "confirmed", "ok": ok}, until)
                return
            name, theirs = message["task"], message["nonce"]
            if name not in self.peers:
                raise Dropped(f"a hello from {name[:40]!r}, not a peer")
            if not self.secret:
                self._call_back(name, theirs, until)
            mine = meeting.nonce()
            meeting.send(connection, {"type": "challenge", "task": self.name, "nonce": mine, "proof": self.secret.proof(
                "challenge", name, self.name, theirs, mine)}, until)
            reply = meeting.parse(meeting.read_line(connection, until), "settings")
            self.secret.check(reply["proof"], "visitor", name, self.name, theirs, mine, reply["settings"])
            meeting.send(connection, {"type": "settings", "settings": self.own, "proof": self.secret.proof(
                "listener", name, self.name, theirs, mine, self.own)}, until)
            meeting.read_line(connection, until)  # the peer closes first (its side keeps the TIME_WAIT): it has ours
        except Dropped as error:
            self._drop(host, str(error), name)
            return
        except Exception as error:  # pylint: disable=broad-except  # no bytes may end this thread with a traceback
            self._drop(host, f"a message that raised {error.__class__.__name__}", name)
            return
        finally:
            self._release(connection, host)
        self._meet(name, reply["settings"])

    def _call_back(self, name, their_nonce, until):
        """Raises Dropped unless `name`, at its own TF_CONFIG address, confirms the visit with `their_nonce`."""
        host, port = self.peers[name].rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as connection:
                meeting.send(connection, {"type": "confirm", "task": self.name, "nonce": their_nonce}, until)
                answer = meeting.parse(meeting.read_line(connection, until), "confirmed")
        except OSError:
            answer = None
        if not (answer and answer["ok"]):
            raise Dropped(f"a hello as {name}, which {self.peers[name]} did not confirm")

    def _close(self):
        """Frees the port for TensorFlow's server: the accepting thread and every open connection let go of it."""
        with self._lock:
            self._closing = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._server.join(timeout=5)
            self._listener = None
        for connection in self._open.connections():
            try:
                connection.shutdown(socket.SHUT_RDWR)  # its handler ends at once; it closes the socket itself
            except OSError:
                pass


def _shown(value):
    return str(value).lower() if isinstance(value, bool) or value is None else value
