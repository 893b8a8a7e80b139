"""The benchmark scripts run end to end (a --quick smoke run) and print every table; no timing is asserted."""

import subprocess
import sys

from conftest import ROOT, TFDS_MANUAL_DIR, DATA_DIR


def test_speed_benchmark_smoke_run_prints_every_table(prepared_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/speed.py", "--quick", "--models=mlp", f"--out={tmp_path}",
         f"--data_dir={DATA_DIR}", f"--tfds_manual_dir={TFDS_MANUAL_DIR}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "speed.md").read_text()
    for title in ("### Training", "### Seconds per epoch", "### Input pipeline", "### Inference",
                  "### 2 local workers"):
        assert title in report
    rows = [line for line in report.splitlines() if line.startswith("| mlp |")]
    training = [row for row in rows if "| notebook |" in row or "| seed |" in row or "| fast |" in row][:3]
    assert [row.split("|")[2].strip() for row in training] == ["notebook", "seed", "fast"]
    assert training[0].count("| 1.0× |") == 1 and training[1].endswith("| 1.0× |")  # each baseline against itself
    assert training[2].count("×**") == 2  # the fast row carries both ratios
    assert sum("+ 1 thread per op" in row for row in rows) == 1  # the MLP's ablation names its thread setting
    assert (tmp_path / "mlp-2-workers" / "metrics.json").exists()
    assert "Machine: 2 cores" in report or "Machine: " in report
