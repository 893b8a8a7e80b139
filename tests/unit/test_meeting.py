"""The cluster meeting against strangers on the pod network: forged, malformed, huge, slow and replayed messages.

In-process: ClusterStartup objects of a 2-worker cluster on loopback, each forming in a thread, and a stray
client speaking to their ports. A stranger must neither form the job nor fail it, stall it, kill a thread or
hear its settings; two real workers still meet (and refuse each other when their settings differ).
"""

import json
import logging
import socket
import threading
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from support.processes import free_ports
from trainer.errors import RetryableError, UserError
from trainer.resilience import cluster, meeting

SETTINGS = {"model": "mlp", "epochs": 3, "learning_rate": 0.001}
FORGED = [b'{"task":"worker-1","settings":{"epochs":999}}\n',  # the one line that failed the job
          b'{"task":"worker-1"}\n',                             # the hello with no settings that counted as met
          b'{"type":"hello","task":"worker-1","nonce":"' + b"0" * 32 + b'"}\n']  # a well-formed one, forged


def tf_configs(count=2):
    hosts = [f"localhost:{port}" for port in free_ports(count)]
    return [{"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}} for i in range(count)]


class Forming:
    """A ClusterStartup forming in a thread: `.error` once it ended (None: met every peer)."""

    def __init__(self, tf_config, own=SETTINGS, timeout=30, secret=None):
        self.startup = cluster.ClusterStartup(tf_config, dict(own), timeout, *([secret] if secret else []))
        self.port = int(self.startup.address.rsplit(":", 1)[1])
        self.error, self.done = None, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        deadline = time.monotonic() + 5
        while not hasattr(self.startup, "_server"):
            assert time.monotonic() < deadline, "the listener never started"
            time.sleep(0.01)

    def _run(self):
        try:
            self.startup.form()
        except Exception as error:  # noqa: BLE001  (the test looks at it)
            self.error = error
        self.done.set()

    def wait(self, seconds=20):
        assert self.done.wait(seconds), "the meeting never ended"
        return self.error


def exchange(port, data, shut=True, seconds=10):
    """Sends `data` to the port, then reads every byte sent back until the listener closes: (reply, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("localhost", port), timeout=seconds) as connection:
        try:
            connection.sendall(data)
            if shut:
                connection.shutdown(socket.SHUT_WR)
        except OSError:  # the listener cut a message over its cap
            pass
        reply = b""
        try:
            while chunk := connection.recv(65536):
                reply += chunk
        except OSError:
            pass
    return reply, time.monotonic() - started


def test_forged_hellos_neither_fail_nor_form_the_job_and_the_real_peer_still_meets():
    configs = tf_configs()
    first = Forming(configs[0])
    for line in FORGED:
        reply, _ = exchange(first.port, line)
        assert b"settings" not in reply and b"epochs" not in reply  # nothing told to a stranger
    time.sleep(1)
    assert not first.done.is_set() and first.startup.mismatch is None and not first.startup.met
    second = Forming(configs[1])
    assert first.wait() is None and second.wait() is None


@pytest.mark.parametrize("junk", [b"null\n", b'{"settings":[]}\n', b"[]\n", b"\xff\xfe\n", b"[" * 100000 + b"\n",
                                  b'{"type":"settings","settings":{"1":[]},"proof":""}\n', b"1e999999\n", b""])
def test_no_bytes_end_the_listener_or_count_as_a_peer(junk, caplog):
    configs = tf_configs()
    first = Forming(configs[0])
    _, seconds = exchange(first.port, junk)
    assert seconds < meeting.CONNECTION_SECONDS + 1
    time.sleep(0.3)  # a thread that a message kills dies just after the connection closes
    assert first.startup._server.is_alive() and not first.startup.met and first.startup.mismatch is None
    second = Forming(configs[1])
    assert first.wait() is None and second.wait() is None
    assert "Traceback" not in caplog.text


def test_a_junk_answer_to_a_visit_is_ignored_and_the_wait_ends_with_75():
    configs = tf_configs()
    peer_port = int(configs[0]["cluster"]["worker"][1].rsplit(":", 1)[1])
    fake = socket.create_server(("localhost", peer_port))
    stop = threading.Event()

    def answer_junk():
        fake.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = fake.accept()
            except OSError:
                continue
            with connection:
                connection.sendall(b'{"settings":[]}\n')
    threading.Thread(target=answer_junk, daemon=True).start()
    try:
        error = Forming(configs[0], timeout=2).wait()
    finally:
        stop.set()
    fake.close()
    assert isinstance(error, RetryableError)


def test_a_slow_client_neither_holds_the_listener_nor_its_connection_past_the_deadline():
    first = Forming(tf_configs()[0])
    slow = socket.create_connection(("localhost", first.port))
    closed = threading.Event()

    def dribble():  # one byte every 1.5 s, as the client
        try:
            for _ in range(20):
                slow.sendall(b"{")
                time.sleep(1.5)
        except OSError:
            closed.set()
    threading.Thread(target=dribble, daemon=True).start()
    time.sleep(0.5)
    # Meanwhile another visitor is answered at once: a call-back's question, not confirmed.
    reply, seconds = exchange(first.port, b'{"type":"confirm","task":"worker-1","nonce":"' + b"1" * 32 + b'"}\n')
    assert json.loads(reply) == {"type": "confirmed", "ok": False} and seconds < 1
    assert closed.wait(meeting.CONNECTION_SECONDS + 3), "the slow connection outlived its deadline"
    slow.close()


def test_a_huge_message_is_cut_at_the_cap_without_growing_the_worker():
    first = Forming(tf_configs()[0])
    data = b"x" * (40 << 20)  # the 40 MB without a newline
    tracemalloc.start()
    try:
        exchange(first.port, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * meeting.MAX_MESSAGE, f"{peak} bytes traced"
    assert first.startup._server.is_alive() and not first.startup.met


def test_dropped_messages_cost_one_log_line_per_address(caplog):
    first = Forming(tf_configs()[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(30):
            exchange(first.port, b"junk\n")
    assert caplog.text.count("Cluster port: ignored") == 1, caplog.text


@pytest.mark.parametrize("secrets", [("same", "same"), (None, None)])
def test_two_workers_of_other_settings_both_refuse(secrets):
    configs = tf_configs()
    keys = [meeting.Secret(s.encode()) if s else None for s in secrets]
    first = Forming(configs[0], secret=keys[0])
    second = Forming(configs[1], own={**SETTINGS, "epochs": 4}, secret=keys[1])
    errors = [first.wait(), second.wait()]
    assert all(isinstance(e, UserError) and "--epochs=" in str(e) for e in errors), errors


def test_workers_of_one_secret_meet_and_of_another_never_do(caplog):
    configs = tf_configs()
    first, second = (Forming(c, secret=meeting.Secret(b"s3cret")) for c in configs)
    assert first.wait() is None and second.wait() is None
    configs = tf_configs()
    first = Forming(configs[0], timeout=2, secret=meeting.Secret(b"s3cret"))
    second = Forming(configs[1], timeout=2, secret=meeting.Secret(b"other"))
    assert isinstance(first.wait(), RetryableError) and isinstance(second.wait(), RetryableError)
    assert "not proven with the job's secret" in caplog.text


def test_a_captured_exchange_cannot_be_replayed():
    """The visitor's proof covers the listener's fresh nonce: an old exchange's settings message does not pass."""
    secret = meeting.Secret(b"s3cret")
    first = Forming(tf_configs()[0], secret=secret)
    visitor_nonce, old_nonce = "a" * 32, "b" * 32
    captured = {"type": "settings", "settings": SETTINGS,
                "proof": secret.proof("visitor", "worker-1", "worker-0", visitor_nonce, old_nonce, SETTINGS)}
    with socket.create_connection(("localhost", first.port), timeout=5) as connection:
        until = meeting.deadline()
        meeting.send(connection, {"type": "hello", "task": "worker-1", "nonce": visitor_nonce}, until)
        challenge = meeting.parse(meeting.read_line(connection, until), "challenge")
        assert challenge["nonce"] != old_nonce
        meeting.send(connection, captured, until)
        assert meeting.read_line(connection, until) == b""  # no settings back: dropped
    assert not first.startup.met and first.startup.mismatch is None


def test_the_secret_comes_from_a_file_or_the_environment(tmp_path):
    (tmp_path / "secret").write_text("abc\n")
    assert meeting.load_secret(str(tmp_path / "secret"), {}).key == b"abc"
    assert meeting.load_secret(None, {meeting.SECRET_ENV: "xyz"}).key == b"xyz"
    assert not meeting.load_secret(None, {})
    with pytest.raises(UserError, match="placeholder"):
        meeting.load_secret(None, {meeting.SECRET_ENV: "CLUSTER_SECRET"})
    (tmp_path / "empty").write_text("\n")
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError, match="secret"):
            meeting.load_secret(str(path), {})


# ---- properties: whatever the bytes, the worker lives, says nothing, keeps its deadline and its memory ---------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=5), max_leaves=20)
MESSAGES = st.one_of(
    JSON.map(lambda value: json.dumps(value).encode() + b"\n"),
    st.fixed_dictionaries({"type": st.sampled_from(sorted(meeting.SHAPES)), "task": st.sampled_from(
        ["worker-0", "worker-1", "chief-0", ""]) | st.text(max_size=10), "nonce": st.text("0123456789abcdef",
        min_size=32, max_size=32), "settings": JSON, "proof": st.text(max_size=64), "ok": st.booleans()},
        ).flatmap(lambda full: st.sets(st.sampled_from(sorted(full)), min_size=1).map(
            lambda keys: json.dumps({k: full[k] for k in keys}).encode() + b"\n")),
    st.binary(max_size=4096),
    st.binary(min_size=meeting.MAX_MESSAGE - 10, max_size=meeting.MAX_MESSAGE + 4096),
)


@pytest.fixture(scope="module")
def listening():
    """One worker waiting for a peer that never comes (long timeout), for every example."""
    forming = Forming(tf_configs()[0], timeout=0)
    yield forming
    forming.startup._close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=MESSAGES)
def test_any_bytes_to_the_listener_leave_it_alive_silent_and_bounded(listening, data):
    tracemalloc.start()
    try:
        reply, seconds = exchange(listening.port, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    startup = listening.startup
    assert seconds < meeting.CONNECTION_SECONDS + 1
    assert b"settings" not in reply and b"model" not in reply
    assert startup._server.is_alive() and not startup.met and startup.mismatch is None
    assert not listening.done.is_set()
    assert peak < 4 * meeting.MAX_MESSAGE + 4 * len(data) + (1 << 20)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(answer=MESSAGES)
def test_any_answer_to_a_visit_is_survived_in_bounded_time(answer):
    assume(not meeting.is_tensorflow_server(answer.split(b"\n", 1)[0]))  # that one means: the peer moved on
    fake = socket.create_server(("localhost", 0))
    port = fake.getsockname()[1]
    tf_config = {"cluster": {"worker": [f"localhost:{free_ports(1)[0]}", f"localhost:{port}"]},
                 "task": {"type": "worker", "index": 0}}
    startup = cluster.ClusterStartup(tf_config, dict(SETTINGS), 30)

    def answer_once():
        connection, _ = fake.accept()
        with connection:
            try:
                connection.sendall(answer)
            except OSError:
                pass
    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    started = time.monotonic()
    startup._visit("worker-1")
    assert time.monotonic() - started < cluster.CONNECT_SECONDS + meeting.CONNECTION_SECONDS + 1
    assert not startup.met and startup.mismatch is None
    server.join(5)
    fake.close()
