"""The container launchers, checked without a Docker engine: the Dockerfile is hadolint clean, pinned to
requirements.txt's TensorFlow, non-root and in step with the manifests (user, $HOME, TFDS data folder);
.dockerignore sends what the Dockerfile copies and nothing big; the scripts pass shellcheck, and jobs/run_docker.sh
builds the hardened docker command line (a stand-in docker records it). The image itself is built and run in
tests/launch/test_image.py."""

import json
import os
import re

from support.data import ROOT
from support.launch import MAIN_BIN, dockerfile_env, dockerfile_text, fake_client, lint_tool, run

import pytest

# The launchers' checks run the checkers and launchers as processes, or read what kubectl rendered: the end-to-end
# layer (`make test`).
pytestmark = pytest.mark.e2e


def test_dockerfile_passes_hadolint():
    hadolint = MAIN_BIN / "hadolint"
    result = run([hadolint, "--disable-ignore-pragma", "Dockerfile"])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    assert "hadolint ignore" not in dockerfile_text()
    # hadolint is really looking: the same Dockerfile with an untagged base is reported.
    untagged = re.sub(r"^FROM (\S+):\S+ AS cpu$", r"FROM \1 AS cpu", dockerfile_text(), count=1, flags=re.M)
    control = run([hadolint, "--no-color", "-"], input=untagged)
    assert re.findall(r"\b(DL\d{4}|SC\d{4})\b", control.stdout) == ["DL3006"], control.stdout


def test_dockerfile_builds_the_pinned_tensorflow_as_a_non_root_trainer():
    text = dockerfile_text()
    pinned = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    # One stage per variant (`--target cpu|gpu`, gpu last: the default), each on its pinned base, and no ARG:
    # podman 4.3 does not apply an ARG default inside FROM.
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert stages == [(f"tensorflow/tensorflow:{pinned}", "cpu"), (f"tensorflow/tensorflow:{pinned}-gpu", "gpu")]
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and not re.search(r"^ARG ", text, re.M)
    # Both stages run the same instructions.
    bodies = [[line for line in body.splitlines() if line.strip() and not line.startswith("#")]
              for body in re.split(r"^FROM .*$", text, flags=re.M)[1:]]
    assert bodies[0] == bodies[1], "the cpu and gpu stages differ below their FROM lines"
    body = "\n".join(bodies[0])
    assert "pip install --no-cache-dir -r requirements.txt -c constraints.txt" in body
    assert "pip install --no-cache-dir --no-deps ." in body
    # The build's check: the trainer and its runtime import (absl's --help* exit 1, so not those).
    assert 'python3 -I -c "import trainer.task, trainer.training.train"' in body and "--help" not in body
    assert re.findall(r"^USER (\S+)$", body, re.M) == ["10001:10001"]
    assert re.search(r'^ENTRYPOINT \["fmnist-train"\]$', body, re.M)
    assert "fmnist-train=trainer.task:run" in (ROOT / "setup.py").read_text()
    assert dockerfile_env()["TF_USE_LEGACY_KERAS"] == "1"


def test_dockerignore_sends_what_the_dockerfile_copies():
    # docker-py (a checkov dependency) implements the .dockerignore rules of the docker CLI.
    script = ("import json, sys\nfrom docker.utils.build import exclude_paths\n"
              "lines = open('.dockerignore').read().splitlines()\n"
              "patterns = [l.strip() for l in lines if l.strip() and not l.startswith('#')]\n"
              "print(json.dumps(sorted(exclude_paths('.', patterns))))\n")
    result = run([lint_tool("python"), "-c", script])
    assert result.returncode == 0, result.stderr
    context = set(json.loads(result.stdout))
    sources = []
    for line in dockerfile_text().splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    assert sources, "no COPY in the Dockerfile"
    for source in sources:
        assert source.rstrip("/") in context, f"COPY {source}: not in the build context"
    assert "trainer/task.py" in context
    for path in context:
        assert not path.startswith((".venv", ".git/", ".data", "out/", "build/", "tests/", "bench/")), path
        assert "__pycache__" not in path, path


def test_scripts_pass_shellcheck():
    scripts = sorted((ROOT / "jobs").glob("*.sh"))
    assert len(scripts) >= 2
    result = run([lint_tool("shellcheck"), *scripts])
    assert result.returncode == 0, result.stdout


def test_run_docker_runs_the_image_hardened_as_the_caller(tmp_path):
    docker, log = fake_client(tmp_path / "bin", "docker")
    manual = tmp_path / "manual"
    manual.mkdir()
    env = {"PATH": os.environ["PATH"], "DOCKER": str(docker), "OUT_DIR": str(tmp_path / "out"),
           "DATA_DIR": str(tmp_path / "data"), "TFDS_MANUAL_DIR": str(manual)}
    result = run([ROOT / "jobs" / "run_docker.sh", "--model=cnn", "--output_dir=/out/cnn"], env=env)
    assert result.returncode == 0, result.stderr
    args = log.read_text().splitlines()
    assert args[:2] == ["run", "--rm"]
    joined = " ".join(args)
    for expected in (f"--user {os.getuid()}:{os.getgid()}", "--read-only", "--cap-drop ALL",
                     "--security-opt no-new-privileges", f"--volume {tmp_path / 'out'}:/out",
                     f"--volume {tmp_path / 'data'}:/data/tfds", f"--volume {manual}:/data/manual:ro"):
        assert expected in joined
    image = args.index("fmnist-trainer:0.1.0-cpu")
    assert args[image + 1:] == ["--tfds_manual_dir=/data/manual", "--model=cnn", "--output_dir=/out/cnn"]
    assert "--gpus" not in args
    assert (tmp_path / "out").is_dir() and (tmp_path / "data").is_dir()

    result = run([ROOT / "jobs" / "run_docker.sh", "--model=mlp"], env={**env, "GPU": "1", "TFDS_MANUAL_DIR": ""})
    assert result.returncode == 0, result.stderr
    args = log.read_text().splitlines()
    assert "--gpus" in args and args[-2:] == ["fmnist-trainer:0.1.0-gpu", "--model=mlp"]
