"""The cluster meeting's wire: bounded JSON lines, their strict shapes, and the job's optional shared secret.

Anyone on the pod network can reach a worker's cluster port, so nothing read from it is trusted by its shape
alone: a message is one JSON object on one line of at most MAX_MESSAGE bytes, read within the connection's
deadline, with exactly the keys its type declares; anything else raises Dropped (never another error), which the
caller turns into at most one log line per address. The secret (a file, or an environment variable for Vertex AI)
proves each side of an exchange: an HMAC-SHA256 over both sides' fresh nonces, both task names and, for the
settings, their canonical JSON, so a captured exchange cannot be replayed or altered.
"""

import collections
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
import time

from absl import logging

from trainer.errors import UserError

MAX_MESSAGE = 64 * 1024    # bytes of one line: settings are ~2 KB
CONNECTION_SECONDS = 5.0   # one whole connection, the call-back included: a slow client cannot hold a handler
NONCE_HEX = 32             # 16 random bytes
SECRET_FILE_ENV = "FMNIST_CLUSTER_SECRET_FILE"
SECRET_ENV = "FMNIST_CLUSTER_SECRET"
MAX_SECRET_BYTES = 4096
PLACEHOLDER = b"CLUSTER_SECRET"  # jobs/customjob-multi-worker.yaml's, which jobs/submit_vertex.sh fills in
HTTP2_SETTINGS = 4         # the frame type a gRPC (TensorFlow) server sends first

# type: {key: the value's type}. "proof" is "" without a secret.
SHAPES = {
    "hello": {"type": str, "task": str, "nonce": str},           # visitor -> listener
    "challenge": {"type": str, "task": str, "nonce": str, "proof": str},  # listener -> visitor
    "settings": {"type": str, "settings": dict, "proof": str},   # visitor first, then the listener
    "confirm": {"type": str, "task": str, "nonce": str},         # the call-back: "is this your visit to me?"
    "confirmed": {"type": str, "ok": bool},
}


class Dropped(Exception):
    """The other side sent something that is not the message expected, or too much, or too late."""


def nonce():
    return secrets.token_hex(NONCE_HEX // 2)


def deadline(seconds=CONNECTION_SECONDS):
    return time.monotonic() + seconds


def send(connection, message, until):
    _set_timeout(connection, until)
    try:
        connection.sendall((json.dumps(message, sort_keys=True) + "\n").encode())
    except OSError as error:
        raise Dropped(f"the connection failed while sending ({error.__class__.__name__})") from None


def read_line(connection, until, limit=MAX_MESSAGE):
    """The bytes up to the first newline (or the end), at most `limit` of them, before `until`."""
    data = bytearray()
    while b"\n" not in data:
        _set_timeout(connection, until)
        try:
            chunk = connection.recv(min(65536, limit + 1 - len(data)))
        except OSError as error:  # socket.timeout included
            raise Dropped(f"no whole message in time ({error.__class__.__name__})") from None
        if not chunk:
            break
        data += chunk
        if len(data) > limit and b"\n" not in data[:limit + 1]:
            raise Dropped(f"a message over {limit} bytes")
    return bytes(data.split(b"\n", 1)[0])


def parse(line, *types):
    """The message in `line` (bytes), of one of `types`, with exactly its keys; else Dropped."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested past Python's stack
        raise Dropped("not a JSON line") from None
    if not isinstance(message, dict) or message.get("type") not in types:
        raise Dropped(f"not a {' or '.join(types)} message")
    shape = SHAPES[message["type"]]
    if set(message) != set(shape) or any(type(message[key]) is not kind for key, kind in shape.items()):
        raise Dropped(f"a {message['type']} message of the wrong shape")
    if "nonce" in shape and not _is_hex(message["nonce"], NONCE_HEX):
        raise Dropped("a malformed nonce")
    if "settings" in shape and not all(isinstance(key, str) for key in message["settings"]):
        raise Dropped("malformed settings")
    return message


def is_tensorflow_server(data):
    """True if `data` opens like an HTTP/2 server's first frame: the peer's TensorFlow server has the port."""
    return len(data) >= 9 and data[3] == HTTP2_SETTINGS and data[5:9] == b"\0\0\0\0"


def _is_hex(value, length):
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


def _set_timeout(connection, until):
    left = until - time.monotonic()
    if left <= 0:
        raise Dropped("past the connection's deadline")
    connection.settimeout(left)


class Secret:
    """The job's shared secret: proofs of an exchange. `Secret(None)` proves nothing and accepts only ""."""

    def __init__(self, key):
        self.key = key

    def __bool__(self):
        return self.key is not None

    def proof(self, role, visitor, listener, visitor_nonce, listener_nonce, settings=None):
        if self.key is None:
            return ""
        transcript = json.dumps(["fmnist-cluster/1", role, visitor, listener, visitor_nonce, listener_nonce,
                                 settings], sort_keys=True, separators=(",", ":"))
        return hmac.new(self.key, transcript.encode(), hashlib.sha256).hexdigest()

    def check(self, proof, *transcript):
        if not hmac.compare_digest(proof.encode(), self.proof(*transcript).encode()):
            raise Dropped("not proven with the job's secret" if self.key else "a proof where none is set up")


def load_secret(path, environ=None):
    """Secret from the file at `path` (--cluster_secret_file), else $FMNIST_CLUSTER_SECRET, else none."""
    environ = os.environ if environ is None else environ
    if path:
        try:
            with open(path, "rb") as f:
                key = f.read(MAX_SECRET_BYTES + 1)
        except OSError as error:
            raise UserError(f"cannot read --cluster_secret_file={path} ({error.strerror or error}): mount the "
                            f"job's secret there (docs/distributed.md), or leave {SECRET_FILE_ENV} unset.") from None
        where = f"--cluster_secret_file={path}"
    else:
        key = environ.get(SECRET_ENV, "").encode() or None
        if key is None:
            return Secret(None)
        where = f"${SECRET_ENV}"
    key = key.strip()
    if key == PLACEHOLDER:
        raise UserError(f"the cluster secret in {where} is still the placeholder {PLACEHOLDER}: submit the job with "
                        "jobs/submit_vertex.sh, or put a random secret there, e.g. `openssl rand -hex 32`.")
    if not key or len(key) > MAX_SECRET_BYTES:
        raise UserError(f"the cluster secret in {where} is empty or over {MAX_SECRET_BYTES} bytes: give every "
                        "worker of the job the same random secret, e.g. `openssl rand -hex 32`.")
    return Secret(key)


def close_quietly(connection):
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


class Admission:
    """The connections handled at once: at most `total`, `per_host` of them from one address (thread-safe)."""

    def __init__(self, total, per_host):
        self.total, self.per_host = total, per_host
        self._open, self._hosts, self._lock = set(), collections.Counter(), threading.Lock()

    def admit(self, connection, host):
        with self._lock:
            if len(self._open) >= self.total or self._hosts[host] >= self.per_host:
                return False
            self._open.add(connection)
            self._hosts[host] += 1
            return True

    def release(self, connection, host):
        with self._lock:
            self._open.discard(connection)
            self._hosts[host] -= 1
            if not self._hosts[host]:
                del self._hosts[host]

    def connections(self):
        with self._lock:
            return list(self._open)


class DropLog:
    """One WARNING line per address a dropped message came from, then one for all past `limit` addresses."""

    def __init__(self, limit):
        self.limit, self._said, self._lock = limit, set(), threading.Lock()

    def say(self, source, reason):
        with self._lock:
            if source in self._said or None in self._said:
                return
            self._said.add(source if len(self._said) < self.limit else None)
            last = None in self._said
        if last:
            logging.warning("Cluster port: more messages dropped, from more addresses; no more lines about them.")
        else:
            logging.warning("Cluster port: ignored %s from %s (the next ones from there are not logged).", reason,
                            source)
