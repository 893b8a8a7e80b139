"""The comparison report's command as a process: without matplotlib or scipy (as in the runtime image), and its
errors in one line without a traceback (tests/unit/test_compare.py: the report itself)."""

import os
import subprocess
import sys

import pytest

from support.data import ROOT


WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None  # as in the runtime image\n"
                      "from trainer.commands.compare import main; sys.exit(main(['compare', *sys.argv[1:]]))")


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
    result = subprocess.run([sys.executable, "-m", "trainer.commands.compare", *two_runs], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "test_predictions.npz" in result.stderr
    assert result.stdout == ""


WITHOUT_SCIPY = ("import sys; sys.modules['scipy'] = None  # as in the runtime image\n"
                 "from trainer.commands.compare import main; sys.exit(main(['compare', *sys.argv[1:]]))")


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
