"""The TrainJob status reporter (trainer/monitoring/trainjob_status.py) against a local stand-in of Kubeflow
Trainer's status server: HTTPS with a CA of the test's own, and its rules (pkg/statusserver at v2.3.0): POST to
the TrainJob's path, `Authorization: Bearer <the current token>`, a body of at most 64 KiB that decodes into an
UpdateTrainJobStatusRequest and that the TrainJob CRD's trainerStatus schema accepts (the vendored v2.3.0 CRD:
types, 0-100, >= 0, names and values of 1-64 characters, at most 256 metrics, lastUpdatedTime required), at most
one update every interval. Some tests make it answer 403, 422 and 500; one rotates the token mid-run; one real
training process reports into it."""

import datetime
import http.server
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
import types

import jsonschema
import pytest

from support.data import ROOT, data_flags
from support.processes import clean_env, read_metrics
from test_launch_trainjob import crd, strict
from trainer.monitoring import trainjob_status

PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/fmnist/trainjobs/fmnist-train/status"


def make_ca_and_server_cert(folder):
    """A CA of the test's own and a certificate for localhost/127.0.0.1 signed by it (cryptography)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    window = dict(not_valid_before=now - datetime.timedelta(hours=1), not_valid_after=now + datetime.timedelta(days=1))

    def certificate(subject, issuer, key, signing_key, extensions):
        builder = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key()) \
            .serial_number(x509.random_serial_number()).not_valid_before(window["not_valid_before"]) \
            .not_valid_after(window["not_valid_after"])
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fmnist test CA")])
    ca = certificate(ca_name, ca_name, ca_key, ca_key, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    server = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, server_key,
                         ca_key, [(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                   False)])
    pem = serialization.Encoding.PEM
    paths = {name: folder / f"{name}.pem" for name in ("ca", "server", "server-key")}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["server"].write_bytes(server.public_bytes(pem))
    paths["server-key"].write_bytes(server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return paths


TRAINER_STATUS = strict(crd("TrainJob")[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "status"]["properties"]["trainerStatus"])


def rule_violations(body):
    """Why Trainer's status server would answer 422: not an UpdateTrainJobStatusRequest, or the CRD says no."""
    try:
        request = json.loads(body)
    except ValueError as error:
        return [f"not JSON: {error}"]
    if not isinstance(request, dict) or set(request) - {"trainerStatus"}:
        return [f"not an UpdateTrainJobStatusRequest: {str(request)[:100]}"]
    status = request.get("trainerStatus")
    problems = [e.message for e in jsonschema.Draft7Validator(TRAINER_STATUS).iter_errors(status)]
    if isinstance(status, dict):
        if "lastUpdatedTime" not in status:
            problems.append("lastUpdatedTime is required when trainerStatus is present")
        elif not isinstance(status["lastUpdatedTime"], str) or not re.fullmatch(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", status["lastUpdatedTime"]):
            problems.append(f"lastUpdatedTime {status['lastUpdatedTime']!r} is not RFC 3339")
    return problems


class StatusServer:
    """Trainer's status server, standing in: its path, auth, size and schema rules; `answers` to give instead of
    200 to the next valid requests; every request kept as (time, authorization, body, answer)."""

    def __init__(self, certs, token):
        self.tokens, self.answers, self.requests = {token}, [], []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, message="ok"):
                body = json.dumps({"status": "Failure", "message": message, "code": code}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return code

            def do_POST(self):
                arrived = time.monotonic()  # the client counts its interval from the answer: arrivals keep it
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(min(length, 1 << 17))
                auth = self.headers.get("Authorization", "")
                if self.path != PATH:
                    code = self.reply(404, "Not found")
                elif length > 1 << 16:
                    code = self.reply(413, "Payload too large")
                elif auth.split(" ", 1)[0] != "Bearer" or auth.split(" ", 1)[-1] not in server.tokens:
                    code = self.reply(403, "Forbidden")
                elif rule_violations(body):
                    code = self.reply(422, "; ".join(rule_violations(body)))
                elif server.answers:
                    code = self.reply(server.answers.pop(0), "scripted refusal")
                else:
                    code = self.reply(200)
                server.requests.append((arrived, auth, body, code))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs["server"], certs["server-key"])
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}{PATH}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, code=200):
        return [json.loads(body)["trainerStatus"] for _, _, body, answer in self.requests if answer == code]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def certs(tmp_path):
    return make_ca_and_server_cert(tmp_path)


@pytest.fixture
def server(certs, tmp_path):
    (tmp_path / "token").write_text("token-1\n")
    s = StatusServer(certs, "token-1")
    yield s
    s.close()


def environ_for(server, certs, tmp_path):
    return {"KUBEFLOW_TRAINER_SERVER_URL": server.url, "KUBEFLOW_TRAINER_SERVER_CA_CERT": str(certs["ca"]),
            "KUBEFLOW_TRAINER_SERVER_TOKEN": str(tmp_path / "token")}


class FakeProgress(types.SimpleNamespace):
    """What the reporter reads of progress.Progress."""

    def __init__(self):
        super().__init__(global_step=0, total_steps=100, steps_per_epoch=20, epochs=5, epoch=1, epoch_logs={},
                         examples_per_second=None, eta_seconds=None)

    def epoch_done(self, epoch):
        self.global_step, self.epoch = epoch * 20, epoch + 1
        self.epoch_logs = {"loss": 1.0 / epoch, "accuracy": 0.8, "val_loss": 0.5, "val_accuracy": 0.79}
        self.examples_per_second, self.eta_seconds = 5000.123, (5 - epoch) * 2.4


def reporter_for(server, certs, tmp_path, interval=0.2, environ=None):
    """A started reporter on a FakeProgress; its client notes when each request sets off (`reporter.starts`):
    the spacing rule is the client's, and this machine's load delays the server's threads, not the clock."""
    reporter = trainjob_status.from_environ({**environ_for(server, certs, tmp_path), **(environ or {})}, chief=True,
                                            interval=interval)
    reporter.starts, post = [], reporter.client.post

    def timed_post(body):
        reporter.starts.append(time.monotonic())
        return post(body)

    reporter.client.post = timed_post
    tracker = FakeProgress()
    reporter.attach(tracker)
    return reporter, tracker


def train_fake(tracker, seconds_per_epoch=0.3, between=None):
    for epoch in range(1, 6):
        for step in range(20):
            tracker.global_step = (epoch - 1) * 20 + step + 1
            time.sleep(seconds_per_epoch / 20)
        tracker.epoch_done(epoch)
        if between:
            between(epoch)


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def arrivals(server):
    return [t for t, *_ in server.requests]


def test_the_chief_reports_progress_eta_and_metrics_then_100_percent(server, certs, tmp_path):
    reporter, tracker = reporter_for(server, certs, tmp_path)
    train_fake(tracker)
    reporter.finish({"test_accuracy": 0.8812, "test_loss": 0.3321})
    assert reporter.failed == 0 and [answer for *_, answer in server.requests] == [200] * len(server.requests)
    statuses = server.bodies()
    assert len(statuses) >= 5, statuses
    progress = [s["progressPercentage"] for s in statuses]
    assert progress == sorted(progress) and max(progress[:-1]) <= 99 and progress[-1] == 100
    assert any(0 < p < 99 for p in progress)  # within epochs too, not only at their ends
    last = statuses[-1]
    assert last["estimatedRemainingSeconds"] == 0
    metrics = {m["name"]: m["value"] for m in last["metrics"]}
    assert metrics == {"loss": "0.2", "accuracy": "0.8", "val_loss": "0.5", "val_accuracy": "0.79",
                       "examples_per_second": "5000.1", "epoch": "5/5", "test_accuracy": "0.8812",
                       "test_loss": "0.3321"}
    assert any("estimatedRemainingSeconds" in s and s["estimatedRemainingSeconds"] > 0 for s in statuses)
    assert min(gaps(reporter.starts)) >= 0.2  # one update per interval at most, the last one too
    assert all(a == "Bearer token-1" for _, a, _, _ in server.requests)
    # Nothing but the chief reports, and nothing without Trainer's variables.
    assert trainjob_status.from_environ(environ_for(server, certs, tmp_path), chief=False) is None
    assert trainjob_status.from_environ({}, chief=True) is None


def test_refusals_and_an_unreachable_server_are_one_warning_and_a_backoff(server, certs, tmp_path, caplog):
    server.answers = [403, 422, 500]
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="absl")  # a test before may have parsed absl flags: WARNING there
    reporter, tracker = reporter_for(server, certs, tmp_path, interval=0.1)
    train_fake(tracker, seconds_per_epoch=0.5)
    reporter.finish({"test_accuracy": 0.9, "test_loss": 0.3})
    answers = [answer for *_, answer in server.requests]
    assert answers[:3] == [403, 422, 500] and set(answers[3:]) == {200}, answers
    # The back-off doubles after each refusal: 0.2, 0.4, 0.8 s, then the interval again.
    backoffs = gaps(reporter.starts)[:3]
    assert all(g >= b for g, b in zip(backoffs, (0.2, 0.4, 0.8))) and backoffs == sorted(backoffs), backoffs
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "TrainJob status" in r.getMessage()]
    assert len(warnings) == 1 and "403 Forbidden" in warnings[0].getMessage(), [r.getMessage() for r in warnings]
    assert "\n" not in warnings[0].getMessage()
    assert any("updated again after 3 failed attempts" in r.getMessage() for r in caplog.records)
    assert server.bodies()[-1]["progressPercentage"] == 100

    # A server that is not there: one warning, and finish() returns within its bound.
    caplog.clear()
    gone, tracker = reporter_for(server, certs, tmp_path, 0.05, {"KUBEFLOW_TRAINER_SERVER_URL": "https://127.0.0.1:9/x"})
    train_fake(tracker, seconds_per_epoch=0.2)
    started = time.monotonic()
    gone.finish({"test_accuracy": 0.9}, wait=2)
    assert time.monotonic() - started < 2.5 and gone.sent == 0 and gone.failed >= 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings

    # A server that takes the connection and never answers: the run's end still waits no longer than told.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        hung, tracker = reporter_for(server, certs, tmp_path, 0.05,
                                     {"KUBEFLOW_TRAINER_SERVER_URL": f"https://127.0.0.1:{port}/x"})
        tracker.epoch_done(1)
        time.sleep(0.3)  # the first request is under way, and hangs
        started = time.monotonic()
        hung.finish({"test_accuracy": 0.9}, wait=1)
        assert time.monotonic() - started < 1.5 and hung.sent == 0


def test_the_token_is_read_again_before_every_request(server, certs, tmp_path):
    """The kubelet rotates the projected token (the old one stays valid a while): the requests after the file
    changes carry the new one, and once the server accepts only the new one, they still go through."""
    reporter, tracker = reporter_for(server, certs, tmp_path)

    def rotate(epoch):
        if epoch == 2:
            server.tokens = {"token-1", "token-2"}
            (tmp_path / "token").write_text("token-2\n")
        if epoch == 3:
            server.tokens = {"token-2"}

    train_fake(tracker, between=rotate)
    reporter.finish({"test_accuracy": 0.9, "test_loss": 0.3})
    auths = [a for _, a, _, _ in server.requests]
    assert "Bearer token-1" in auths and "Bearer token-2" in auths
    assert auths == sorted(auths)  # token-1 until the rotation, token-2 after it
    assert {answer for *_, answer in server.requests} == {200}, server.requests


def test_tls_is_verified_against_the_given_ca_and_only_https_is_used(server, certs, tmp_path):
    body = trainjob_status.trainer_status(10, 30, {"loss": 0.5})
    client = trainjob_status.StatusClient(server.url, str(certs["ca"]), str(tmp_path / "token"))
    client.post(body)
    (tmp_path / "other").mkdir()
    other = make_ca_and_server_cert(tmp_path / "other")
    with pytest.raises(trainjob_status.StatusError, match="CERTIFICATE_VERIFY_FAILED"):
        trainjob_status.StatusClient(server.url, str(other["ca"]), str(tmp_path / "token")).post(body)
    with pytest.raises(trainjob_status.StatusError, match="not an https URL"):
        trainjob_status.StatusClient(server.url.replace("https", "http"), str(certs["ca"]), str(tmp_path / "token"))
    with pytest.raises(trainjob_status.StatusError, match="answered 404"):
        trainjob_status.StatusClient(server.url + "x", str(certs["ca"]), str(tmp_path / "token")).post(body)
    (tmp_path / "token").write_text("stolen")
    with pytest.raises(trainjob_status.StatusError, match="answered 403 Forbidden"):
        client.post(body)


def test_the_body_keeps_to_the_apis_rules(server, certs, tmp_path):
    """Types, ranges and sizes: clamped and cut by the client; the server (the CRD's schema) refuses them raw."""
    body = trainjob_status.trainer_status(140.7, -3, {f"m{i}" * 40: i * 1.5 for i in range(300)})
    status = body["trainerStatus"]
    assert status["progressPercentage"] == 100 and status["estimatedRemainingSeconds"] == 0
    assert len(status["metrics"]) == 256 and all(1 <= len(m["name"]) <= 64 for m in status["metrics"])
    assert rule_violations(json.dumps(body)) == []
    assert len(json.dumps(body)) <= 64 * 1024
    client = trainjob_status.StatusClient(server.url, str(certs["ca"]), str(tmp_path / "token"))
    client.post(body)
    # What the server refuses (and so would Trainer's): a string percentage, 101, an empty value, no time, 257 metrics.
    for broken, complaint in (({"progressPercentage": "45"}, "is not of type 'integer'"),
                              ({"progressPercentage": 101}, "maximum of 100"),
                              ({"metrics": [{"name": "loss", "value": ""}]}, "should be non-empty"),
                              ({"metrics": [{"name": "loss", "value": 0.1}]}, "is not of type 'string'"),
                              ({"metrics": [{"name": "m", "value": "1"}] * 257}, "is too long")):
        status = {**trainjob_status.trainer_status(1, 1, {})["trainerStatus"], **broken}
        with pytest.raises(trainjob_status.StatusError, match="answered 422"):
            client.post({"trainerStatus": status})
        assert complaint in " ".join(rule_violations(json.dumps({"trainerStatus": status}))), broken
    assert "lastUpdatedTime is required" in rule_violations(json.dumps({"trainerStatus": {"progressPercentage": 1}}))[0]
    with pytest.raises(trainjob_status.StatusError, match="over the server's 65536"):
        client.post({"trainerStatus": {"metrics": [{"name": "x", "value": "y" * 64}] * 2000}})


@pytest.mark.e2e
def test_a_real_training_run_reports_into_its_trainjob(prepared_data, server, certs, tmp_path):
    """A small MLP, 2 epochs, as a process with Trainer's variables: every update accepted, the last 100 % with
    the test metrics the run published, at most one update per 5 s."""
    import subprocess
    out = tmp_path / "out"
    command = [sys.executable, "-m", "trainer.task", "--model=mlp", "--recipe=seed", "--train_examples=6000",
               "--epochs=2", f"--output_dir={out}", *data_flags()]
    log = tmp_path / "train.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=clean_env(environ_for(server, certs, tmp_path)),
                                   stdout=log_file, stderr=subprocess.STDOUT)
        try:
            assert process.wait(timeout=400) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    answers = [answer for *_, answer in server.requests]
    assert answers and set(answers) == {200}, (answers, [b[:300] for *_, b, _ in server.requests])
    statuses = server.bodies()
    last = statuses[-1]
    assert last["progressPercentage"] == 100 and last["estimatedRemainingSeconds"] == 0
    metrics = {m["name"]: m["value"] for m in last["metrics"]}
    published = read_metrics(out)
    assert float(metrics["test_accuracy"]) == pytest.approx(published["test_accuracy"], abs=1e-6)
    assert {"loss", "accuracy", "examples_per_second", "epoch", "test_loss"} <= set(metrics)
    assert metrics["epoch"] == "2/2"
    assert all(g >= 4.5 for g in gaps(arrivals(server))), gaps(arrivals(server))  # 5 s, less the server's jitter
    assert "TrainJob status not updated" not in log.read_text()
