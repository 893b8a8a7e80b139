"""The benchmark scripts run end to end (a --quick smoke run) and print every table; no timing is asserted."""

import subprocess
import sys

from conftest import ROOT, TFDS_MANUAL_DIR, DATA_DIR, assert_ok, data_flags, read_metrics, run_trainer


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


def test_score_validation_scores_exactly_the_held_out_images(prepared_data, tmp_path):
    run = tmp_path / "run"
    assert_ok(run_trainer("--model=mlp", "--recipe=seed", "--train_examples=1000", "--validation_split=0.3",
                          "--epochs=1", f"--output_dir={run}", *data_flags()))
    keras_accuracy = read_metrics(run)["validation_accuracy"]
    proc = subprocess.run(
        [sys.executable, "bench/score_validation.py", str(run), f"--data_dir={DATA_DIR}",
         f"--tfds_manual_dir={TFDS_MANUAL_DIR}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, row = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert header.startswith("| run | none acc | none loss | flip acc |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == str(run) and len(cells) == 1 + 2 * 3
    # The image's own view is what Keras scored on the 300 held-out images during fit (the same weights, float32).
    assert abs(float(cells[1]) - keras_accuracy) <= 1 / 300 + 1e-9


def test_score_validation_refuses_a_run_without_a_validation_split(prepared_data, tmp_path):
    run = tmp_path / "run"
    assert_ok(run_trainer("--model=mlp", "--recipe=seed", "--train_examples=200", "--epochs=1",
                          f"--output_dir={run}", *data_flags()))
    proc = subprocess.run([sys.executable, "bench/score_validation.py", str(run), f"--data_dir={DATA_DIR}",
                           f"--tfds_manual_dir={TFDS_MANUAL_DIR}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and "without --validation_split" in proc.stderr
