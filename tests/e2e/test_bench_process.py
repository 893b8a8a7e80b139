"""The benchmark scripts run end to end, each as its own process, and print every table; no timing is asserted
(their in-process helpers: tests/unit/test_bench.py)."""

import json
import subprocess
import sys

import pytest

from support.data import DATA_DIR, ROOT, TFDS_MANUAL_DIR


@pytest.mark.e2e
def test_speed_benchmark_smoke_run_prints_its_tables(prepared_data, tmp_path):
    # The ablation's and the 2 workers' processes are left out here (each a minute): test_epoch_time and
    # test_cluster run the same commands.
    proc = subprocess.run(
        [sys.executable, "bench/speed.py", "--quick", "--models=mlp", f"--out={tmp_path}", "--skip=ablation,workers",
         f"--data_dir={DATA_DIR}", f"--tfds_manual_dir={TFDS_MANUAL_DIR}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "speed.md").read_text()
    for title in ("### Training", "### Input pipeline", "### Inference"):
        assert title in report
    assert "### Seconds per epoch" not in report and "### 2 local workers" not in report
    rows = [line for line in report.splitlines() if line.startswith("| mlp |")]
    training = [row for row in rows if "| notebook |" in row or "| seed |" in row or "| fast |" in row][:3]
    assert [row.split("|")[2].strip() for row in training] == ["notebook", "seed", "fast"]
    assert training[0].count("| 1.0× |") == 1 and training[1].endswith("| 1.0× |")  # each baseline against itself
    assert training[2].count("×**") == 2  # the fast row carries both ratios
    assert "Machine: " in report
    assert "### Where the fast recipe's time goes" in report and "GFLOP/s" in report and "Floor: " in report


@pytest.mark.e2e
def test_speedrun_benchmark_smoke_run_prints_its_tables(prepared_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/speedrun.py", "--quick", f"--out={tmp_path}", f"--data_dir={DATA_DIR}",
         f"--tfds_manual_dir={TFDS_MANUAL_DIR}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "speedrun.md").read_text()
    assert "| speedrun | speedrun | 1 | 1 |" in report and "| strong | vgg | 1 | 1 |" in report
    assert "strong / speedrun = **" in report and "load average" in report
    assert "**speedrun, --recipe=speedrun**" in report and "**vgg, --recipe=strong**" in report


@pytest.mark.e2e
def test_epoch_time_prints_its_timing_line(prepared_data):
    proc = subprocess.run([sys.executable, "bench/epoch_time.py", "--model=mlp", "--train_examples=1000",
                           "--batch_size=128", "--steps_per_execution=8", f"--data_dir={DATA_DIR}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    assert timing["first_epoch_s"] > 0 and timing["epoch_s"] > 0
