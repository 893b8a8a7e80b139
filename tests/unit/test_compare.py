"""The comparison report (trainer.commands.compare): the Markdown and HTML report, the command and its error messages
(McNemar's test itself: test_stats.py).

Every run here is a small synthetic folder (metrics.json + test_predictions.npz) written by the test: no training.
"""

import base64
import contextlib
import io
import os
import re

import numpy as np
import pytest

from support.runs import CLASSES, N, correctness, other, write_run, write_two_runs
from trainer.commands import compare
from trainer.report import comparison

@pytest.fixture(scope="module")
def two_run_report(tmp_path_factory):
    """The two runs of `two_runs` compared once, with real figures: (stdout, report folder)."""
    root = tmp_path_factory.mktemp("two")
    runs = write_two_runs(root)
    out = root / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert compare.main(["compare", *runs, "--out", str(out)]) == 0
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
    """The command in this process; returns (exit status, stdout, stderr)."""
    status = compare.main(["compare", *args])
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
    paths = [write_run(runs / "a", right, validation=True), write_run(runs / "b", other(right, 120, 30, 10)),
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
    assert comparison.default_report_dir([str(tmp_path / "out" / "mlp"), str(tmp_path / "out" / "cnn")]) == \
        str(tmp_path / "out" / "report")
    assert comparison.default_report_dir(["gs://bucket/a", "/x/b"]) == os.path.join("out", "report")
    assert comparison.default_names(["out/a/mlp", "out/b/mlp", "out/cnn/"]) == ["a/mlp", "b/mlp", "out/cnn"]


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
