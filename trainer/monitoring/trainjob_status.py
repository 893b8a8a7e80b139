"""The run's progress in its Kubeflow TrainJob's status (`kubectl get trainjob`, dashboards, OptimizationJob).

Kubeflow Trainer (v2.2+, feature gate TrainJobStatus) gives each trainer pod KUBEFLOW_TRAINER_SERVER_URL (an
https URL ending in /namespaces/{ns}/trainjobs/{name}/status), KUBEFLOW_TRAINER_SERVER_CA_CERT (the server's CA)
and KUBEFLOW_TRAINER_SERVER_TOKEN (a projected service-account token file that the kubelet rotates, so it is read
again before every request). Each POST replaces `status.trainerStatus` whole:

    {"trainerStatus": {"progressPercentage": 45, "estimatedRemainingSeconds": 120,
                       "metrics": [{"name": "loss", "value": "0.15"}], "lastUpdatedTime": "2026-03-20T10:00:00Z"}}

Only the chief reports. A background thread sends the latest state at most every 5 s (the server's rule); the
training never waits on it: the per-step hook is Progress's (an integer), the thread reads what Progress holds.
A refusal (403, 404, 413, 422, 500) or an unreachable server costs one warning line per spell of failures and a
doubling back-off (to 5 min), never the run. At the end, `finish` reports 100 % and the test metrics, waiting at
most `FINISH_SECONDS` for that last request.

A small client (http.client, ssl) rather than the Kubeflow SDK's `update_trainjob_status`: the SDK (`kubeflow`
0.5.0) brings the Kubernetes client, requests, pydantic and the Trainer and Katib API models into the image, keeps
the token for 5 minutes instead of reading it each time, and warns on every failed call (docs/launch.md).
"""

import contextlib
import http.client
import json
import ssl
import threading
import time
import urllib.parse

from absl import logging

ENV_URL, ENV_CA, ENV_TOKEN = ("KUBEFLOW_TRAINER_SERVER_URL", "KUBEFLOW_TRAINER_SERVER_CA_CERT",
                              "KUBEFLOW_TRAINER_SERVER_TOKEN")
MIN_INTERVAL_SECONDS = 5.0     # the server's rule: at most one update every 5 s
MAX_BACKOFF_SECONDS = 300.0
MAX_BODY_BYTES = 64 * 1024
MAX_METRICS = 256
REQUEST_TIMEOUT_SECONDS = 5.0
FINISH_SECONDS = 15.0          # the longest the end of the run waits for its last report
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class StatusError(Exception):
    """An update the server did not accept, or could not be sent; the message says which and why."""


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def metric_value(value):
    """A metric as the API wants it: a string of 1-64 characters."""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text[:64] or "-"


def trainer_status(progress, eta_seconds, metrics, updated=None):
    """The request body: progress clamped to 0-100, the ETA to >= 0, at most 256 metrics of 1-64 characters."""
    status = {"progressPercentage": max(0, min(100, int(progress)))}
    if eta_seconds is not None:
        status["estimatedRemainingSeconds"] = max(0, int(round(eta_seconds)))
    named = [{"name": str(name)[:64], "value": metric_value(value)} for name, value in metrics.items() if name]
    if named:
        status["metrics"] = named[:MAX_METRICS]
    status["lastUpdatedTime"] = updated or utc_now()
    return {"trainerStatus": status}


class StatusClient:
    """POSTs one status to the TrainJob's status URL: Bearer token read from its file each time, TLS verified
    against the given CA, the body at most 64 KiB."""

    def __init__(self, url, ca_file, token_file, timeout=REQUEST_TIMEOUT_SECONDS):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise StatusError(f"{ENV_URL}={url!r} is not an https URL: the token is never sent in the clear")
        self.url, self.host, self.port = url, parts.hostname, parts.port or 443
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.token_file, self.timeout = token_file, timeout
        try:
            self.context = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as error:
            raise StatusError(f"cannot use the CA {ca_file}: {error}") from None

    def token(self):
        try:
            with open(self.token_file) as f:
                token = f.read().strip()
        except (OSError, TypeError) as error:
            raise StatusError(f"cannot read the token {self.token_file}: {getattr(error, 'strerror', error)}") from None
        if not token:
            raise StatusError(f"the token file {self.token_file} is empty")
        return token

    def post(self, body):
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(data) > MAX_BODY_BYTES:
            raise StatusError(f"the update is {len(data)} bytes, over the server's {MAX_BODY_BYTES}")
        headers = {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"}
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        try:
            connection.request("POST", self.path, body=data, headers=headers)
            response = connection.getresponse()
            answer = response.read(4096)
        except (OSError, http.client.HTTPException) as error:
            raise StatusError(f"{self.host}:{self.port} unreachable ({error})") from None
        finally:
            connection.close()
        if response.status != 200:
            try:
                message = json.loads(answer).get("message", "")
            except (ValueError, AttributeError):
                message = answer.decode(errors="replace")[:200]
            raise StatusError(f"the server answered {response.status} {response.reason}"
                              + (f": {message}" if message else ""))


class StatusReporter:
    """Reports a progress.Progress into the TrainJob's status from a thread of its own, from `attach` on."""

    def __init__(self, client, interval=MIN_INTERVAL_SECONDS, clock=time.monotonic):
        self.client, self.interval, self.clock = client, interval, clock
        self.tracker = None
        self.sent = self.failed = 0
        self._final = None
        self._last_sent = None      # (progress, metrics) of the last accepted update
        self._last_attempt = float("-inf")
        self._failures = 0          # failed attempts since the last accepted one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trainjob-status", daemon=True)

    def attach(self, tracker):
        """Starts reporting `tracker`'s state (train.fit's Progress)."""
        self.tracker = tracker
        self._thread.start()

    def snapshot(self):
        """What the status should say now: training progress (at most 99 % until `finish`), ETA, epoch metrics."""
        if self._final is not None:
            return self._final
        t = self.tracker
        progress = min(99, 100 * t.global_step // max(1, t.total_steps))
        metrics = {name: t.epoch_logs[name] for name in EPOCH_METRICS if name in t.epoch_logs}
        if t.examples_per_second:
            metrics["examples_per_second"] = round(t.examples_per_second, 1)
        if t.epoch_logs:  # the epoch these metrics are from: the last finished one
            metrics["epoch"] = f"{t.global_step // t.steps_per_epoch}/{t.epochs}"
        return progress, t.eta_seconds, metrics

    def finish(self, test_metrics, wait=FINISH_SECONDS):
        """100 %, no time left, the last epoch's and the test's metrics; waits at most `wait` s for it to go."""
        if self.tracker is None:
            return
        _, _, metrics = self.snapshot()
        metrics.update(sorted(test_metrics.items()))
        self._final = (100, 0, metrics)
        self.stop(wait)

    def stop(self, wait=FINISH_SECONDS):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait)

    def _loop(self):
        next_send = self.clock()
        while not self._stop.is_set():
            remaining = next_send - self.clock()
            if remaining > 0:
                self._stop.wait(remaining)
                continue
            snapshot = self.snapshot()
            changed = (snapshot[0], snapshot[2]) != self._last_sent
            next_send = self.clock() + (self._send(snapshot) if changed else self.interval)
        if self._final is not None:  # the last report: once, the interval after the last attempt respected
            time.sleep(max(0.0, self._last_attempt + self.interval - self.clock()))
            self._send(self._final)

    def _send(self, snapshot):
        """Sends one update; the seconds until the next may go."""
        progress, eta, metrics = snapshot
        try:
            self.client.post(trainer_status(progress, eta, metrics))
        except StatusError as error:
            self._last_attempt = self.clock()  # the interval counts from the answer: the server sees it kept
            self.failed += 1
            self._failures += 1
            backoff = min(MAX_BACKOFF_SECONDS, self.interval * 2 ** self._failures)
            if self._failures == 1:
                logging.warning("TrainJob status not updated: %s; retrying with back-off (next in %.3g s), "
                                "training goes on", error, backoff)
            return backoff
        self._last_attempt = self.clock()
        self.sent += 1
        self._last_sent = (progress, metrics)
        if self._failures:
            logging.info("TrainJob status updated again after %d failed attempts", self._failures)
        self._failures = 0
        return self.interval


def from_environ(environ, chief, interval=MIN_INTERVAL_SECONDS):
    """A StatusReporter where Trainer asks for one (KUBEFLOW_TRAINER_SERVER_URL set) and this is the chief; else
    None. A setting it cannot use is one warning line, and no reporting."""
    url = environ.get(ENV_URL)
    if not url or not chief:
        return None
    try:
        client = StatusClient(url, environ.get(ENV_CA), environ.get(ENV_TOKEN))
    except StatusError as error:
        logging.warning("TrainJob status off: %s", error)
        return None
    logging.info("Reporting progress into the TrainJob's status (%s), at most every %.0f s", url, interval)
    return StatusReporter(client, interval)


@contextlib.contextmanager
def reporting(environ, chief):
    """train.run's scope of the reporter (or None): its thread ends with the run, whatever the way out."""
    reporter = from_environ(environ, chief)
    try:
        yield reporter
    finally:
        if reporter is not None:
            reporter.stop(0)
