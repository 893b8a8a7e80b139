"""The image tests (tests/launch/test_image.py) never skip in CI: where CI=true and podman cannot run, they fail with
their reason (elsewhere they skip with it). Checked on a PATH without podman (and APT=0: nothing installed), in a
pytest of its own, in seconds: the image itself is never built here."""

import os
import shutil
import subprocess
import sys

import pytest

from support.data import ROOT

# What jobs/image_test.sh --setup-only needs to find podman missing and say so (and env, for its #! line).
TOOLS = ("bash", "env", "dirname", "id", "date")


@pytest.fixture
def without_podman(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    return str(bin_dir)


def image_tests(path):
    env = {**os.environ, "PATH": path, "APT": "0", "STANDIN": "0", "CI": "true"}
    return subprocess.run([sys.executable, "-m", "pytest", "tests/launch/test_image.py", "-m", "image", "-k", "is_lean",
                           "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-rsfE"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_under_ci_the_image_tests_fail_with_their_reason_where_podman_cannot_run(without_podman):
    result = image_tests(without_podman)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "CI=true, but podman is not installed" in result.stdout, result.stdout[-2000:]
    assert "skipped" not in result.stdout.splitlines()[-1]
    assert "1 error" in result.stdout.splitlines()[-1] or "1 failed" in result.stdout.splitlines()[-1]

