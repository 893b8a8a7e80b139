"""A Prometheus scrape of a training process mid-run parses and its step counter moves on
(tests/unit/test_monitoring.py: the progress lines, ETA and endpoint in-process)."""

import re
import subprocess
import sys
import time
import urllib.request

import pytest

from support.data import ROOT, data_flags
from support.processes import clean_env, read_metrics


def scrape(port):
    """{name: value} of the unlabelled samples of one scrape, parsed by prometheus_client's own parser; plus
    the info sample's labels under "info"."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels:
                values["info"] = sample.labels
            else:
                values[sample.name] = sample.value
    return values


@pytest.mark.e2e
def test_a_scrape_mid_run_parses_and_its_step_counter_moves_on(prepared_data, tmp_path):
    from support.processes import free_ports
    [port] = free_ports(1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "trainer.task", "--model=mlp", "--recipe=seed", "--train_examples=12000",
               "--epochs=3", "--validation_split=0.1", f"--metrics_port={port}", f"--output_dir={out}",
               *data_flags()]
    log = tmp_path / "train.log"
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)
    scrapes = []
    try:
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            try:
                scrapes.append(scrape(port))
            except OSError:  # not serving yet (start-up), or no longer (training ended)
                pass
            time.sleep(0.1)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    training = [s for s in scrapes if "fmnist_train_global_step" in s]
    steps = [s["fmnist_train_global_step"] for s in training]
    assert len(set(steps)) >= 3, steps  # scraped again and again while it trained ...
    assert steps == sorted(steps) and steps[-1] > steps[0]  # ... and the step counter moved on between scrapes
    last = training[-1]
    assert last["fmnist_train_total_steps"] == 3 * 338 and last["fmnist_train_epochs"] == 3
    assert 1 <= last["fmnist_train_epoch"] <= 3 and last["fmnist_train_restarts"] == 0
    assert last["info"] == {"model": "mlp", "recipe": "seed", "task": "single", "chief": "true"}
    after_an_epoch = [s for s in training if "fmnist_train_val_accuracy" in s]
    assert after_an_epoch, "no scrape after the first epoch"
    first = after_an_epoch[0]
    assert 0 < first["fmnist_train_val_accuracy"] <= 1 and first["fmnist_train_examples_per_second"] > 0
    assert first["fmnist_train_eta_seconds"] >= 0 and first["fmnist_train_loss"] > 0
    assert any("fmnist_train_seconds_since_backup" in s for s in after_an_epoch)  # the epoch's backup, found
    metrics = read_metrics(out)
    assert [row["val_accuracy"] for row in metrics["history"]][-1] == metrics["validation_accuracy"]
    text = log.read_text()
    assert len(re.findall(r"epoch \d/3: ", text)) == 3 and not re.search(r"[\r\x08\x1b]", text)
