"""Seeing a run while it trains (trainer/monitoring, trainer/monitoring/tuning.py): the progress lines and their ETA,
the per-epoch tuning reports each engine reads, TensorBoard's HParams records, and the Prometheus endpoint of a real
training process, scraped while it trains."""

import datetime
import io
import json
import os
import re
import sys
import time
import types
import urllib.request

import pytest

from support.data import splits, train_in_process

KATIB_METRIC_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"  # its StdOut collector's default
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): loss [\d.]+, accuracy [\d.]+(, val_loss [\d.]+, val_accuracy [\d.]+)?, "
                        r"[\d,]+ examples/s, \w+ elapsed, ETA (\w+)")


# ---- progress and its ETA, on a clock of our own ------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def drive(tracker, clock, epochs, seconds_per_epoch, first_epoch_extra=0.0, start_epoch=0, validation=False):
    """Feeds `tracker` the hooks Keras would call for `epochs` epochs, each taking `seconds_per_epoch` (the first
    one `first_epoch_extra` more, as tracing makes it)."""
    tracker.on_train_begin()
    lines = []
    for epoch in range(start_epoch, start_epoch + epochs):
        tracker.on_epoch_begin(epoch)
        done_before = tracker.global_step - epoch * tracker.steps_per_epoch
        for batch in range(done_before, tracker.steps_per_epoch):
            clock.now += seconds_per_epoch * 0.9 / (tracker.steps_per_epoch - done_before)
            tracker.on_train_batch_end(batch, {"loss": 0.5})
        if epoch == start_epoch:
            clock.now += first_epoch_extra
        if validation:
            tracker.on_test_begin()
        clock.now += seconds_per_epoch * 0.1
        logs = {"loss": 0.5, "accuracy": 0.8}
        if validation:
            logs.update(val_loss=0.4, val_accuracy=0.85)
        tracker.on_epoch_end(epoch, logs)
        lines.append(tracker.epoch_line())
    return lines


def test_duration_reads_as_a_person_writes_it():
    from trainer.monitoring.progress import duration
    assert [duration(s) for s in (0, 42.4, 91, 466, 3600, 3725)] == ["0s", "42s", "1m31s", "7m46s", "1h00m", "1h02m"]


def test_the_eta_counts_what_is_left_at_the_pace_of_the_epochs_after_the_first(monkeypatch):
    from trainer.monitoring import progress
    clock = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    tracker = progress.Progress(epochs=10, steps_per_epoch=100, examples_per_epoch=12_800, batch_size=128,
                                interactive=False, track_steps=True)
    lines = drive(tracker, clock, 4, seconds_per_epoch=10.0, first_epoch_extra=20.0, validation=True)
    etas = [tracker.eta_seconds]
    assert tracker.global_step == 400 and tracker.epoch == 4
    # After the first epoch its own pace (30 s, tracing included); from the second on, the later epochs' (10 s).
    assert EPOCH_LINE.match(lines[0]).group(4) == "4m30s"
    assert etas == [pytest.approx(6 * 10.0)]
    assert lines[3].startswith("epoch 4/10: loss 0.5000, accuracy 0.8000, val_loss 0.4000, val_accuracy 0.8500, ")
    assert lines[3].endswith(", ETA 1m00s")
    # examples/s: the training part of the epoch only (validation excluded): 12,800 examples in 9 s.
    assert "1,422 examples/s" in lines[3]


def test_the_eta_adds_the_test_evaluation_at_the_pace_of_the_validation(monkeypatch):
    from trainer.monitoring import progress
    clock = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    # 1,000 validation images take 1 s each epoch (drive's validation: a tenth of the epoch); the test evaluation
    # after fit: 1,000 images x 6 test-time views.
    tracker = progress.Progress(epochs=10, steps_per_epoch=100, examples_per_epoch=12_800, batch_size=128,
                                interactive=False, validation_examples=1000, evaluation_examples=6000)
    lines = drive(tracker, clock, 10, seconds_per_epoch=10.0, validation=True)
    assert tracker.eta_seconds == pytest.approx(6.0)  # training done: the evaluation is what is left
    assert lines[3].endswith(", ETA 1m06s")  # 6 epochs of 10 s, then 6 s of evaluation


def test_after_a_resume_the_eta_counts_only_the_steps_left(monkeypatch):
    from trainer.monitoring import progress
    clock = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    # Resumed at step 51 of epoch 7 (global step 650) of 10 epochs of 100 steps.
    tracker = progress.Progress(epochs=10, steps_per_epoch=100, examples_per_epoch=12_800, batch_size=128,
                                start_step=650, interactive=False)
    assert tracker.epoch == 7 and tracker.global_step == 650
    drive(tracker, clock, 2, seconds_per_epoch=10.0, start_epoch=6)
    assert tracker.global_step == 800
    assert tracker.eta_seconds == pytest.approx(200 * 10.0 / 100)  # 2 epochs left at the second epoch's pace


def test_in_a_log_there_are_no_control_characters_and_no_per_step_lines(monkeypatch, capsys):
    from trainer.monitoring import progress
    tracker = progress.Progress(epochs=2, steps_per_epoch=50, examples_per_epoch=6400, batch_size=128,
                                interactive=False)
    assert not tracker._implements_train_batch_hooks()  # Keras does not even call it per step
    drive(tracker, FakeClock(), 2, seconds_per_epoch=1.0)
    assert capsys.readouterr().out == ""  # the lines go to the log (absl, stderr), the bar nowhere


def test_on_a_terminal_a_bar_moves_within_the_epoch_and_gives_way_to_the_epochs_line(monkeypatch):
    from trainer.monitoring import progress
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    clock = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    tracker = progress.Progress(epochs=1, steps_per_epoch=50, examples_per_epoch=6400, batch_size=128,
                                interactive=True)
    assert tracker._implements_train_batch_hooks()
    drive(tracker, clock, 1, seconds_per_epoch=10.0)
    shown = screen.getvalue()
    assert "50/50 [==============================]" in shown and "\r" in shown
    assert shown.endswith("\r\x1b[K")  # cleared for the epoch's line


# ---- a run in this process: its lines, its tuning reports, its HParams records ---------------------------------------

@pytest.fixture(scope="module")
def reported_run(fashion, tmp_path_factory):
    """A 3-epoch MLP run with a validation split, as a Vertex AI trial: (metrics, stdout, absl log, hypertune
    file, output folder)."""
    import contextlib
    import logging
    out = tmp_path_factory.mktemp("reported")
    metric_file = out.parent / f"{out.name}-hypertune" / "output.metrics"
    environ = {"CLOUD_ML_HP_METRIC_FILE": str(metric_file), "CLOUD_ML_TRIAL_ID": "7"}
    stdout, log = io.StringIO(), io.StringIO()
    handler, absl_logger = logging.StreamHandler(log), logging.getLogger("absl")
    absl_logger.addHandler(handler)
    level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    patch = pytest.MonkeyPatch()
    for name, value in environ.items():
        patch.setenv(name, value)
    try:
        with contextlib.redirect_stdout(stdout):
            metrics = train_in_process(out, splits(fashion, 2000, validation_split=0.2), model="mlp", epochs=3,
                                       validation_split=0.2, batch_size=64)
    finally:
        patch.undo()
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(level)
    return metrics, stdout.getvalue(), log.getvalue(), metric_file, out


def test_a_run_logs_one_line_per_epoch_and_nothing_per_step(reported_run):
    metrics, stdout, log, _, _ = reported_run
    lines = [line for line in log.splitlines() if EPOCH_LINE.match(line)]
    assert [EPOCH_LINE.match(line).group(1, 2) for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert not lines[-1].endswith("ETA unknown")
    assert "training epochs 1-3 (25 steps of 64 examples each)" in log
    assert not re.search(r"[\r\x08\x1b]", stdout + log)
    assert not re.search(r"^Epoch \d+/\d+$|^\d+/\d+ - ", stdout + log, re.M)  # Keras's own lines are off


def test_a_trial_reports_every_epoch_to_katib_and_vertex_the_last_being_metrics_json(reported_run):
    metrics, stdout, _, metric_file, _ = reported_run
    kept = metrics["validation_accuracy"]
    assert kept is not None
    # Katib's StdOut collector: lines that begin with an RFC 3339 time (its order), then name=value pairs.
    katib = []
    for line in stdout.splitlines():
        pairs = {m.group(1): m.group(2) for m in re.finditer(KATIB_METRIC_FILTER, line)}
        if "val_accuracy" in pairs:
            stamp = datetime.datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            katib.append((stamp, int(pairs["epoch"]), float(pairs["val_accuracy"])))
    assert [step for _, step, _ in katib] == [1, 2, 3]
    assert [stamp for stamp, _, _ in katib] == sorted(stamp for stamp, _, _ in katib)
    assert [value for _, _, value in katib] == [row["val_accuracy"] for row in metrics["history"]]
    assert katib[-1][2] == kept
    # Vertex AI: cloudml-hypertune's file holds every report of the trial, one per epoch, steps increasing.
    reports = [json.loads(line) for line in metric_file.read_text().splitlines()]
    assert [(r["trial"], int(r["global_step"])) for r in reports] == [("7", 1), ("7", 2), ("7", 3)]
    assert float(reports[-1]["val_accuracy"]) == kept


def test_early_stopping_that_keeps_an_earlier_epoch_reports_its_value_last():
    from trainer.monitoring import tuning

    class History:
        rows = [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.9},
                {"epoch": 3, "val_accuracy": 0.85}]

    stream = io.StringIO()
    reporter = tuning.TrialReporter(History(), early_stopping=True, environ={}, stream=stream)
    for epoch, row in enumerate(History.rows):
        reporter.on_epoch_end(epoch, {"val_accuracy": row["val_accuracy"]})
    reporter.on_train_end()
    assert reporter.reported == [(1, 0.8), (2, 0.9), (3, 0.85), (3, 0.9)]  # the kept (best) epoch's value, last
    assert stream.getvalue().splitlines()[-1].endswith(" epoch=3 val_accuracy=0.9")
    plain = tuning.TrialReporter(History(), early_stopping=False, environ={}, stream=io.StringIO())
    for epoch, row in enumerate(History.rows):
        plain.on_epoch_end(epoch, {"val_accuracy": row["val_accuracy"]})
    plain.on_train_end()
    assert plain.reported[-1] == (3, 0.85) and len(plain.reported) == 3  # the last epoch is what it keeps


def read_events(folder):
    """{tag: [(step, value or plugin content)]} of every event file directly in `folder`."""
    import tensorflow as tf
    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                content = (value.metadata.plugin_data.content if value.metadata.plugin_data.plugin_name == "hparams"
                           else tf.make_ndarray(value.tensor).item())
                found.setdefault(value.tag, []).append((event.step, content))
    return found


def test_the_run_writes_its_settings_and_final_metrics_for_tensorboards_hparams_tab(reported_run):
    from tensorboard.plugins.hparams import plugin_data_pb2
    metrics, _, _, _, out = reported_run
    events = read_events(out / "logs")
    [(_, experiment)] = events["_hparams_/experiment"]
    [(_, start)] = events["_hparams_/session_start_info"]
    [(_, end)] = events["_hparams_/session_end_info"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(experiment).experiment
    start = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info
    assert plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status == 1  # STATUS_SUCCESS
    values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
              for name, value in start.hparams.items()}
    assert values["model"] == "mlp" and values["recipe"] == "fast" and values["epochs"] == 3
    assert values["learning_rate"] == pytest.approx(metrics["learning_rate"])
    assert values["validation_split"] == pytest.approx(0.2) and values["batch_size"] == 64
    assert "output_dir" not in values and "checkpoint_dir" not in values  # where, not what: not hyperparameters
    assert {h.name for h in experiment.hparam_infos} == set(values)
    assert {(m.name.group, m.name.tag) for m in experiment.metric_infos} >= {
        ("", "test_accuracy"), ("validation", "epoch_accuracy"), ("train", "epoch_loss")}
    assert [(step, pytest.approx(v)) for step, v in events["test_accuracy"]] == [(3, metrics["test_accuracy"])]
    validation = read_events(out / "logs" / "validation")
    assert validation["epoch_accuracy"][-1][1] == pytest.approx(metrics["validation_accuracy"])


# ---- the metrics endpoint of a real training process -------------------------------------------------------------


def test_the_backups_age_comes_from_the_newest_checkpoint_until_the_backup_side_tells(tmp_path, monkeypatch):
    from trainer.monitoring import faults
    record = faults.FaultRecord(str(tmp_path), resumed=True)
    assert record.restarts == 1 and record.seconds_since_backup() is None  # no backup yet
    (tmp_path / "chief").mkdir()
    checkpoint = tmp_path / "chief" / "ckpt-1.index"
    checkpoint.write_text("")
    os.utime(checkpoint, (time.time() - 30, time.time() - 30))
    assert 29 <= record.seconds_since_backup() <= 40  # found at the next look, not after a cache expires
    record.watch(types.SimpleNamespace(last_saved_at=time.time() - 2))  # the Backup saved 2 s ago
    record.record_restarts(3)
    assert 1.5 <= record.seconds_since_backup() <= 5 and record.restarts == 3


def test_the_metrics_endpoint_listens_on_metrics_address(tmp_path):
    """--metrics_address: 0.0.0.0 by default (a scrape reaches a pod at its IP), or what it says."""
    from support.processes import free_ports
    from trainer.config import run_config
    from trainer.monitoring import endpoint, faults, progress
    [declared] = [d for d in run_config.job_settings() if d.name == "metrics_address"]
    assert declared.default == "0.0.0.0" and "Prometheus" in declared.help
    with pytest.raises(Exception, match="--metrics_address must be an IP address"):
        run_config.make(output_dir=str(tmp_path), metrics_address="localhost:80")
    port = free_ports(1)[0]
    served = endpoint.MetricsEndpoint(port, progress.Progress(1, 10, 100, 10), faults.FaultRecord(str(tmp_path)),
                                      {"model": "mlp"}, address="127.0.0.1")
    served.on_train_begin()
    try:
        assert served.server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert b"fmnist_train_info" in reply.read()
    finally:
        served.close()
