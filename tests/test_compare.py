"""The comparison report (trainer.compare): the Markdown and HTML report, the command and its error messages
(McNemar's test itself: test_stats.py).

Every run here is a small synthetic folder (metrics.json + test_predictions.npz) written by the test: no training.
"""

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from trainer.report import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
N = 200


# ---- synthetic runs ----------------------------------------------------------------------------------------------

def correctness(both_right, only_this, only_other, both_wrong):
    """Which of the N images a run gets right, laid out cell by cell of the 2x2 agreement table."""
    assert both_right + only_this + only_other + both_wrong == N
    return np.array([True] * both_right + [True] * only_this + [False] * only_other + [False] * both_wrong)


def write_run(path, right, model="mlp", labels=None, predictions=True, history=True, validation=False, **extra):
    labels = np.arange(N) % 10 if labels is None else labels
    predicted = np.where(right, labels, (labels + 1 + np.arange(len(labels)) % 3) % 10)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    rows = []
    for epoch in range(1, 4 if history else 1):
        row = {"epoch": epoch, "seconds": 1.5, "loss": 1.0 / epoch, "accuracy": 0.6 + 0.1 * epoch}
        if validation:
            row.update(val_loss=1.1 / epoch, val_accuracy=0.55 + 0.1 * epoch)
        rows.append(row)
    metrics = {
        "model": model, "params": 109386 if model == "mlp" else 93322,
        "test_accuracy": float(np.mean(predicted == labels)), "test_loss": 0.5 if model == "mlp" else 0.4,
        "per_class_accuracy": dict(zip(CLASSES, per_class.tolist())), "confusion_matrix": confusion.tolist(),
        "recipe": "seed", "epochs": 3, "batch_size": 32, "train_examples": 5000, "seed": 42, "strategy": "default",
        "train_seconds": 12.5, "examples_per_second": 1200.0, "history": rows, "finished_at": "2026-01-01T00:00:00Z",
        **extra,
    }
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    if predictions:
        np.savez_compressed(os.path.join(path, "test_predictions.npz"), class_id=predicted.astype(np.uint8),
                            label=labels.astype(np.uint8))
    return str(path)


@pytest.fixture
def two_runs(tmp_path):
    return _write_two_runs(tmp_path)


def _write_two_runs(root):
    """mlp right on 150 of 200 test images, cnn on 130; b = 30 (only mlp right), c = 10 (only cnn right)."""
    runs = root / "runs"
    mlp = write_run(runs / "mlp", correctness(120, 30, 10, 40), "mlp")
    cnn = write_run(runs / "cnn", _other(correctness(120, 30, 10, 40), 120, 30, 10), "cnn")
    return mlp, cnn


def _other(right_a, both_right, only_a, only_b):
    """Run B's correctness against run A's layout from correctness(): right on the both-right and only-B cells."""
    right_b = np.zeros(N, dtype=bool)
    right_b[:both_right] = True
    right_b[both_right + only_a:both_right + only_a + only_b] = True
    return right_b


@pytest.fixture(scope="module")
def two_run_report(tmp_path_factory):
    """The two runs of `two_runs` compared once, with real figures: (stdout, report folder)."""
    root = tmp_path_factory.mktemp("two")
    runs = _write_two_runs(root)
    out = root / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        compare.main(["compare", *runs, "--out", str(out)])
    return stdout.getvalue(), out


@pytest.fixture
def fast_figures(monkeypatch):
    """Figures as 1x1 PNGs, for tests about anything but the figures themselves (matplotlib takes seconds)."""
    from PIL import Image
    from trainer.report import figures as report_figures

    def stub(*args):
        Image.new("RGB", (1, 1)).save(args[-1])
        return args[-1]
    for name in ("per_class_accuracy", "confusion_matrix", "confusion_change", "training_curves"):
        monkeypatch.setattr(report_figures, name, stub)


def run_compare(capsys, *args):
    """compare.main in this process; returns (exit status, stdout, stderr)."""
    try:
        compare.main(["compare", *args])
        status = 0
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---- the report --------------------------------------------------------------------------------------------------

def test_prints_the_table_and_mcnemar_and_writes_both_reports(two_run_report):
    stdout, out = two_run_report
    table = stdout.splitlines()
    assert table[0].split() == ["run", "model", "recipe", "test", "acc", "test", "loss", "params", "epochs", "batch",
                                "train", "s", "examples/s"]
    assert table[2].split()[:5] == ["mlp", "mlp", "seed", "0.7500", "0.5000"]
    assert table[3].split()[:5] == ["cnn", "cnn", "seed", "0.6500", "0.4000"]
    # b = 30, c = 10: chi-square (|30 - 10| - 1)^2 / 40 = 9.025, p = 0.0027
    assert "b = 30 (only mlp right), c = 10 (only cnn right)" in stdout
    assert "statistic = 9.03" in stdout and "p = 0.0027" in stdout
    assert "mlp makes significantly fewer errors than cnn" in stdout
    assert os.path.isfile(out / "report.md") and os.path.isfile(out / "report.html")


def test_markdown_holds_the_tables_the_p_value_and_relative_figures(two_run_report):
    out = two_run_report[1]
    md = (out / "report.md").read_text()
    assert re.search(r"^\| `mlp` \| mlp \| \*\*0\.7500\*\* \| 0\.5000 \| 109,386 \| 12\.5 \| 1,200 \|$", md, re.M)
    assert re.search(r"^\| `cnn` \| cnn \| 0\.6500 \| \*\*0\.4000\*\* \| 93,322 \| 12\.5 \| 1,200 \|$", md, re.M)
    assert re.search(r"^\| `mlp` \| `cnn` \| 120 \| 30 \| 10 \| 40 \| chi-square, continuity-corrected \| 9\.03 \| "
                     r"\*\*0\.0027\*\* \|$", md, re.M)
    for cls in CLASSES:
        assert re.search(rf"^\| {re.escape(cls)} \| [*0-9.]+ \| [*0-9.]+ \| [-+]\d\.\d{{3}} \|$", md, re.M), cls
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(figures) == sorted(["per_class_accuracy.png", "confusion_mlp.png", "confusion_cnn.png",
                                      "confusion_change_cnn_vs_mlp.png", "training_curves.png"])
    for figure in figures:
        assert not os.path.isabs(figure)
        with open(out / figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", figure


def test_html_is_self_contained_and_embeds_every_figure(two_run_report):
    out = two_run_report[1]
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "<table>" in page and "0.0027" in page and "9.03" in page
    outside_images = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', 'src=""', page)
    assert not re.search(r"(https?:|//|<link|<script|<iframe|@import|url\()", outside_images, re.I)
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(re.findall(r"!\[", md)) == 5
    embedded = set()
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        embedded.add(base64.b64decode(source.split(",", 1)[1]))
    for name in os.listdir(out):
        if name.endswith(".png"):
            assert (out / name).read_bytes() in embedded, f"{name} is not embedded"
    assert not re.search(r'href="(?!#)', page)


def test_names_are_escaped_in_html_and_sanitised_in_file_names(two_runs, tmp_path, capsys, fast_figures):
    out = tmp_path / "report"
    status, stdout, stderr = run_compare(capsys, *two_runs, "--out", str(out), "--names", "<b>base</b>,new & better")
    assert status == 0, stderr
    page = (out / "report.html").read_text()
    assert "<b>base</b>" not in page and "&lt;b&gt;base&lt;/b&gt;" in page and "new &amp; better" in page
    assert os.path.isfile(out / "confusion_b_base_b.png") and os.path.isfile(out / "confusion_new_better.png")
    assert "<b>base</b>" in stdout


def test_three_runs_test_every_pair_with_holm_adjustment_and_validation_curves(tmp_path, capsys):
    runs = tmp_path / "runs"
    right = correctness(120, 30, 10, 40)
    paths = [write_run(runs / "a", right, validation=True), write_run(runs / "b", _other(right, 120, 30, 10)),
             write_run(runs / "c", right, "cnn", validation=True)]
    status, stdout, stderr = run_compare(capsys, *paths)
    assert status == 0, stderr
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("McNemar")] == [
        "McNemar a vs b", "McNemar a vs c", "McNemar b vs c"]
    assert "b = 0 (only a right), c = 0 (only c right), exact binomial, statistic = 0, p = 1.0000" in stdout
    md = (runs / "report" / "report.md").read_text()  # default: the runs' common parent + /report
    assert "Holm-adjusted p" in md and "validation dashed" in md
    assert "confusion_change_c_vs_a.png" in md


def test_single_run_and_run_without_history(tmp_path, capsys, fast_figures):
    path = write_run(tmp_path / "only", correctness(120, 30, 10, 40), history=False)
    out = tmp_path / "r"
    status, stdout, stderr = run_compare(capsys, path, "--out", str(out))
    assert status == 0, stderr
    md = (out / "report.md").read_text()
    assert "McNemar's test needs two" in md and "No run recorded a per-epoch history" in md
    assert not os.path.exists(out / "training_curves.png")
    assert "no per-epoch history" in stderr


def test_predictions_that_disagree_with_metrics_are_flagged(tmp_path, capsys, fast_figures):
    runs = tmp_path / "runs"
    a = write_run(runs / "a", correctness(120, 30, 10, 40), test_accuracy=0.9)
    b = write_run(runs / "b", correctness(120, 30, 10, 40))
    status, _, stderr = run_compare(capsys, a, b)
    assert status == 0
    assert "a: its test predictions give accuracy 0.7500 but metrics.json says 0.9000" in stderr
    assert "0.9000" in (runs / "report" / "report.md").read_text()


def test_default_report_dir_is_the_common_parent(tmp_path):
    assert compare.default_report_dir([str(tmp_path / "out" / "mlp"), str(tmp_path / "out" / "cnn")]) == \
        str(tmp_path / "out" / "report")
    assert compare.default_report_dir(["gs://bucket/a", "/x/b"]) == os.path.join("out", "report")
    assert compare.default_names(["out/a/mlp", "out/b/mlp", "out/cnn/"]) == ["a/mlp", "b/mlp", "out/cnn"]


def test_a_rerun_replaces_the_figures_of_the_last_report(two_runs, tmp_path, capsys, fast_figures):
    out = tmp_path / "report"
    assert run_compare(capsys, *two_runs, "--out", str(out), "--names", "x,y")[0] == 0
    assert run_compare(capsys, *two_runs, "--out", str(out))[0] == 0
    assert not os.path.exists(out / "confusion_x.png")
    assert os.path.exists(out / "confusion_mlp.png")


# ---- errors: one line, exit status 2, no traceback ------------------------------------------------------------

def _expect_error(capsys, args, *fragments):
    status, stdout, stderr = run_compare(capsys, *args)
    assert status == 2
    assert stderr.startswith("compare: error: ") and stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr
    return stderr


def test_missing_predictions_is_a_clear_error(two_runs, tmp_path, capsys):
    os.remove(os.path.join(two_runs[1], "test_predictions.npz"))
    _expect_error(capsys, [*two_runs, "--out", str(tmp_path / "r")], two_runs[1], "test_predictions.npz",
                  "--overwrite")
    assert not os.path.exists(tmp_path / "r")


def test_unfinished_run_is_a_clear_error(two_runs, capsys):
    os.remove(os.path.join(two_runs[0], "metrics.json"))
    _expect_error(capsys, two_runs, "no finished run", two_runs[0])


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    _expect_error(capsys, [str(tmp_path / "nowhere")], "is not a folder")


def test_predictions_without_the_expected_arrays_are_a_clear_error(two_runs, capsys):
    np.savez(os.path.join(two_runs[1], "test_predictions.npz"), predictions=np.zeros(N))
    _expect_error(capsys, two_runs, "lacks the array(s) class_id, label (it has predictions)")


def test_different_test_set_sizes_are_a_clear_error(tmp_path, capsys):
    a = write_run(tmp_path / "a", correctness(120, 30, 10, 40))
    b = write_run(tmp_path / "b", np.ones(100, dtype=bool), labels=np.arange(100) % 10)
    _expect_error(capsys, [a, b], "tested on 100 images", "200", "same test set")


def test_different_labels_are_a_clear_error(tmp_path, capsys):
    a = write_run(tmp_path / "a", correctness(120, 30, 10, 40))
    b = write_run(tmp_path / "b", correctness(120, 30, 10, 40), labels=(np.arange(N) + 1) % 10)
    _expect_error(capsys, [a, b], "different true labels for 200 of 200 test images")


@pytest.mark.parametrize("args, fragment", [([], "no run given"), (["--names", "a"], "no run given"),
                                            (["--bogus"], "Unknown command line flag 'bogus'"),
                                            (["--out", "gs://b/r"], "local folder")])
def test_bad_command_lines_are_clear_errors(two_runs, capsys, args, fragment):
    full = args if args in ([], ["--names", "a"]) else [*two_runs, *args]
    _expect_error(capsys, full, fragment)


def test_wrong_number_of_names_is_a_clear_error(two_runs, capsys):
    _expect_error(capsys, [*two_runs, "--names", "a,b,c"], "3 name(s) for 2 run(s)")
    _expect_error(capsys, [*two_runs, "--names", "a,a"], "repeats a name")


WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None  # as in the runtime image\n"
                      "from trainer.report.compare import main; main(['compare', *sys.argv[1:]])")


@pytest.mark.e2e
def test_no_report_needs_no_matplotlib_and_the_report_says_how_to_get_it(two_runs, tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, *two_runs, "--no-report"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "b = 30 (only mlp right), c = 10 (only cnn right)" in result.stdout and "report:" not in result.stdout
    result = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, *two_runs, "--out", str(tmp_path / "r")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the report needs matplotlib" in result.stderr and "--no-report" in result.stderr


@pytest.mark.e2e
def test_command_line_error_has_no_traceback(two_runs):
    os.remove(os.path.join(two_runs[0], "test_predictions.npz"))
    result = subprocess.run([sys.executable, "-m", "trainer.compare", *two_runs], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "test_predictions.npz" in result.stderr
    assert result.stdout == ""


WITHOUT_SCIPY = ("import sys; sys.modules['scipy'] = None  # as in the runtime image\n"
                 "from trainer.report.compare import main; main(['compare', *sys.argv[1:]])")


@pytest.mark.e2e
def test_without_scipy_no_report_prints_the_table_and_says_how_to_get_the_tests(two_runs):
    result = subprocess.run([sys.executable, "-c", WITHOUT_SCIPY, *two_runs, "--no-report"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test acc" in result.stdout and "McNemar" not in result.stdout
    assert "McNemar's tests need scipy" in result.stderr and "requirements-report.txt" in result.stderr
    one = subprocess.run([sys.executable, "-c", WITHOUT_SCIPY, two_runs[0], "--no-report"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and "scipy" not in one.stderr, one.stderr


# ---- Cloud Storage -----------------------------------------------------------------------------------------------

def test_runs_in_cloud_storage_are_compared(two_runs, gcs, tmp_path, capsys, fast_figures):
    for local in two_runs:
        for name in ("metrics.json", "test_predictions.npz"):
            gcs.blob(f"exp/{os.path.basename(local)}/{name}").upload_from_filename(os.path.join(local, name))
    urls = ["gs://runs/exp/mlp", "gs://runs/exp/cnn"]
    status, stdout, stderr = run_compare(capsys, *urls, "--out", str(tmp_path / "r"))
    assert status == 0, stderr
    assert "b = 30 (only mlp right), c = 10 (only cnn right)" in stdout
    assert "`gs://runs/exp/mlp`" in (tmp_path / "r" / "report.md").read_text()
    gcs.blob("exp/cnn/test_predictions.npz").delete()
    _expect_error(capsys, urls, "gs://runs/exp/cnn has no test_predictions.npz")
