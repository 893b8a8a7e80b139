"""The container image, built with podman and run the way the Kubernetes manifests run it (`make image-test`).

A session fixture builds the CPU image once (`podman build --pull=never --target cpu`; podman's layer cache makes
it a no-op when nothing changed). Every container is hardened like the manifests' pods: read-only root file
system, user 10001, all capabilities dropped, no privilege escalation, no network (except the two workers, which
share a network of their own), the data mounted read-only, writable scratch space on tmpfs and a writable volume
for the outputs. The tests:

- the image: its user, entry point, environment, and what it carries (no tests, bench, docs or lint files);
- the GPU stage builds too (on the stand-in base it is the CPU stage's layers: see docs/launch.md);
- one short training run that publishes metrics.json and saved_model/;
- jobs/run_docker.sh, unchanged but for the engine (DOCKER=podman);
- two containers as MultiWorkerMirroredStrategy workers, with the multi-worker overlay's command and environment
  (k8s/tf_config.py), only the chief publishing;
- a container stopped with `podman stop` (SIGTERM, then SIGKILL after the grace period) during epoch 2: it exits
  75 with the step it saved named, and a new container with the same flags resumes at that step and finishes;
- `python -m trainer.commands.compare RUN_DIR --no-report` inside the image (which has no matplotlib).

Skipped, with one line, only where podman cannot run: not installed and not installable (jobs/image_test.sh
--setup-only installs it with apt as root, and builds a stand-in base where no registry is reachable), or
`podman info` fails. Under CI=true they fail instead, with the same reason: CI installs podman (a machine of this
kind does it with apt, as `make image-test` does), so the only test of SIGTERM to PID 1 in a container never
silently does not run (tests/launch/test_image_gate.py checks this).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from support.data import DATA_DIR, TFDS_MANUAL_DIR

pytestmark = pytest.mark.image

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "k8s"))
import tf_config  # noqa: E402  (k8s/tf_config.py: the multi-worker pods' launcher)

IMAGE = os.environ.get("FMNIST_IMAGE_CPU", "fmnist-trainer:0.1.0-cpu")
IMAGE_GPU = os.environ.get("FMNIST_IMAGE_GPU", "fmnist-trainer:0.1.0-gpu")
USER = "10001:10001"
CA_BUNDLE = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
NETWORK, SUBNET = "fmnist-image-test", "10.213.71"
# A short run: the seed recipe on 2,000 training examples, one epoch.
SHORT = ["--model=mlp", "--recipe=seed", "--train_examples=2000", "--epochs=1"]
RUN_ID = uuid.uuid4().hex[:8]
# The workers' addresses on the test network: FIRST_HOST, FIRST_HOST + 1, ... (per session, so that two sessions
# at once do not collide).
FIRST_HOST = 10 + 2 * (int(RUN_ID, 16) % 100)


def podman(*args, timeout=600, check=False):
    result = subprocess.run(["podman", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(map(str, args[:3]))} ... failed:\n{result.stderr[-4000:]}"
    return result


def base_images():
    tf_version = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    return [f"tensorflow/tensorflow:{tf_version}", f"tensorflow/tensorflow:{tf_version}-gpu"]


def cannot_run(reason):
    """Skips the image tests with `reason`, or fails them under CI=true (where podman must run)."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true, but {reason}: install podman (jobs/image_test.sh --setup-only does it as root, with "
                    "apt) or unset CI to skip the image tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine():
    """podman, if it can run containers here; else the session's image tests skip with one line (fail in CI).

    Where podman or the base images are missing, `jobs/image_test.sh --setup-only` first installs podman (apt, as
    root) and builds the stand-in base, as `make image-test` does: `make test` on a fresh machine runs these too.
    """
    if not shutil.which("podman") or any(podman("image", "exists", base).returncode for base in base_images()):
        setup = subprocess.run([ROOT / "jobs" / "image_test.sh", "--setup-only"], capture_output=True, text=True,
                               timeout=1800)
        last = (setup.stderr.strip().splitlines() or ["no output"])[-1]
        if not shutil.which("podman"):
            cannot_run(f"podman is not installed and jobs/image_test.sh could not install it: {last[:200]}")
        assert setup.returncode == 0 or "podman cannot run here" in setup.stderr, setup.stderr[-3000:]
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        cannot_run(f"podman cannot run here: {reason[:200]}")
    return info.stdout.strip()


def build(target, tag):
    """`podman build --target TARGET` of the repository; the host's CA bundle is mounted for pip, never copied."""
    base = base_images()[target == "gpu"]
    pull = "never" if podman("image", "exists", base).returncode == 0 else "missing"
    cmd = ["build", f"--pull={pull}", "--target", target, "--tag", tag]
    if CA_BUNDLE.exists():
        cmd += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    started = time.monotonic()
    result = podman(*cmd, ROOT, timeout=3600)
    assert result.returncode == 0, (
        f"podman build --target {target} failed (base {base}, pull={pull}; without a registry, jobs/image_test.sh "
        f"builds a stand-in base):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


@pytest.fixture(scope="session")
def image(engine):
    seconds = build("cpu", IMAGE)
    print(f"\nbuilt {IMAGE} in {seconds:.0f} s")
    return IMAGE


@pytest.fixture
def out(tmp_path):
    """A host folder for /out, owned by the container's user."""
    folder = tmp_path / "out"
    folder.mkdir()
    os.chown(folder, 10001, 10001)
    return folder


def hardened(name, *, network="none", mounts=(), env=None, entrypoint=None, detach=False):
    """`podman run` options of a pod of the manifests: read-only root, user 10001, no capabilities."""
    opts = ["run", "--name", f"fmnist-it-{RUN_ID}-{name}", "--pull=never", "--read-only",
            "--user", USER, "--cap-drop=ALL", "--security-opt=no-new-privileges", f"--network={network}",
            "--tmpfs", "/tmp:rw,size=2g,mode=1777", "--tmpfs", "/home/trainer:rw,size=256m,mode=1777"]
    opts.append("--detach" if detach else "--rm")
    for host, container, mode in mounts:
        opts += ["--volume", f"{host}:{container}:{mode}"]
    for key, value in (env or {}).items():
        opts += ["--env", f"{key}={value}"]
    if entrypoint:
        opts += ["--entrypoint", json.dumps(entrypoint)]
    return opts


def data_mounts():
    """The TFDS data prepared on the host, read-only (the trainer only reads a prepared data set)."""
    return [(DATA_DIR, "/data/tfds", "ro")]


def remove(*names):
    for name in names:
        podman("rm", "--force", "--time=0", f"fmnist-it-{RUN_ID}-{name}", timeout=120)


def logs(name):
    result = podman("logs", name)
    return result.stdout + result.stderr


def assert_published(folder):
    assert (folder / "metrics.json").is_file(), sorted(p.name for p in folder.iterdir())
    assert (folder / "saved_model" / "saved_model.pb").is_file()
    return json.loads((folder / "metrics.json").read_text())


# ------------------------------------------------------------------------------------------------ the image


def test_image_runs_the_trainer_as_a_non_root_user(image):
    config = json.loads(podman("image", "inspect", image, check=True).stdout)[0]["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["fmnist-train"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["TFDS_DATA_DIR"] == "/data/tfds"
    assert env["HOME"] == "/home/trainer"


def test_image_is_lean(image):
    script = ("import os, json, importlib.util as u\n"
              "files = sorted(os.path.join(d, f)[len('/opt/fmnist/'):] for d, _, fs in os.walk('/opt/fmnist') "
              "for f in fs)\n"
              "print(json.dumps({'files': files, 'matplotlib': bool(u.find_spec('matplotlib')), "
              "'pytest': bool(u.find_spec('pytest'))}))\n")
    result = podman(*hardened("lean", entrypoint=["python3", "-c"]), image, script, check=True)
    found = json.loads(result.stdout)
    assert "k8s/tf_config.py" in found["files"] and "trainer/task.py" in found["files"]
    unwanted = [f for f in found["files"] if f.startswith(("tests/", "bench/", "docs/", "build/", "jobs/", "."))
                or "__pycache__" in f or f.endswith((".pyc", ".md"))]
    assert not unwanted, unwanted
    assert not found["matplotlib"] and not found["pytest"], found
    size = json.loads(podman("image", "inspect", image, check=True).stdout)[0]["Size"]
    print(f"\n{image}: {size / 1e9:.2f} GB")


def test_gpu_stage_builds(image):
    seconds = build("gpu", IMAGE_GPU)
    config = json.loads(podman("image", "inspect", IMAGE_GPU, check=True).stdout)[0]["Config"]
    assert config["User"] == USER and config["Entrypoint"] == ["fmnist-train"]
    print(f"\nbuilt {IMAGE_GPU} in {seconds:.0f} s")


# ----------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="session")
def short_run(image, prepared_data, tmp_path_factory):
    """(folder, CompletedProcess) of one short run in a hardened, network-less container."""
    out = tmp_path_factory.mktemp("short-run")
    os.chown(out, 10001, 10001)
    try:
        result = podman(*hardened("short", mounts=[*data_mounts(), (out, "/out", "rw")]), image,
                        *SHORT, "--data_dir=/data/tfds", "--output_dir=/out/mlp", timeout=900)
    finally:
        remove("short")
    return out / "mlp", result


def test_a_short_run_publishes_its_model_and_metrics(short_run):
    folder, result = short_run
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = assert_published(folder)
    assert metrics["epochs"] == 1 and 0.5 < metrics["test_accuracy"] <= 1, metrics.get("test_accuracy")
    assert metrics["num_workers"] == 1
    assert not (folder / "checkpoints").exists(), "the backup must be gone after a finished run"


def test_run_docker_sh_runs_the_image_with_podman(image, prepared_data, tmp_path):
    env = {"PATH": os.environ["PATH"], "DOCKER": "podman", "IMAGE": image, "OUT_DIR": str(tmp_path / "out"),
           "DATA_DIR": DATA_DIR, "TFDS_MANUAL_DIR": TFDS_MANUAL_DIR}
    result = subprocess.run([ROOT / "jobs" / "run_docker.sh", *SHORT, "--output_dir=/out/mlp"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_published(tmp_path / "out" / "mlp")


def multi_worker_pod():
    """(command, environment, secret files) of the multi-worker overlay's trainer container, from its manifests.

    The secret files are {path in the container: key} for each Secret volume the container mounts, so that the
    test can stand in for the Secret the operator creates (the pods do not start without it).
    """
    folder = ROOT / "k8s" / "overlays" / "multi-worker"
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    pod = node.get("spec") if isinstance(node.get("spec"), dict) else None
                    for container in (pod or {}).get("containers") or []:
                        if "k8s/tf_config.py" in (container.get("command") or []):
                            return container["command"], container.get("env", []), secret_files(pod, container)
                    stack += node.values()
                elif isinstance(node, list):
                    stack += node
    pytest.fail(f"no container runs k8s/tf_config.py in {folder}")


def secret_files(pod, container):
    secrets = {v["name"]: v["secret"] for v in pod.get("volumes") or [] if "secret" in v}
    files = {}
    for mount in container.get("volumeMounts") or []:
        secret = secrets.get(mount["name"])
        for item in (secret or {}).get("items") or []:
            files[f"{mount['mountPath']}/{item['path']}"] = item["key"]
    return files


def test_two_workers_train_together_and_only_the_chief_publishes(image, prepared_data, out):
    command, env_list, secrets = multi_worker_pod()
    env = {e["name"]: str(e["value"]) for e in env_list if "value" in e}
    # The Secret fmnist-cluster-secret the operator creates (docs/distributed.md), mounted where the pod mounts it:
    # read-only, readable by the trainer's group only, as the volume's defaultMode 0440 and the pod's fsGroup make it.
    secret_mounts = []
    for number, (path, key) in enumerate(sorted(secrets.items())):
        folder = out.parent / f"secret-{number}"
        folder.mkdir()
        (folder / key).write_text(f"{RUN_ID}-{key}-shared-by-both-workers\n")
        os.chown(folder / key, 0, 10001)
        os.chmod(folder / key, 0o440)
        secret_mounts.append((folder / key, path, "ro"))
    assert env.get("FMNIST_CLUSTER_SECRET_FILE") in secrets, (env.get("FMNIST_CLUSTER_SECRET_FILE"), secrets)
    # What Kubernetes fills in from the pod's metadata: the completion index (below) and the Job's name.
    env.setdefault("JOB_NAME", "fmnist-multi-worker-worker-0")
    count = int(env["WORKER_COUNT"])
    hosts = tf_config.worker_hosts({**env, "JOB_COMPLETION_INDEX": "0"})
    if podman("network", "exists", NETWORK).returncode != 0:
        podman("network", "create", "--subnet", f"{SUBNET}.0/24", NETWORK, check=True)
    # Each worker's DNS name (<job>-<index>.<service>) points at its own address on the test network.
    add_hosts = []
    for index, host in enumerate(hosts):
        add_hosts += ["--add-host", f"{host.rpartition(':')[0]}:{SUBNET}.{FIRST_HOST + index}"]
    names = [f"worker-{index}" for index in range(count)]
    try:
        for index, name in enumerate(names):
            opts = hardened(name, network=NETWORK, mounts=[*data_mounts(), *secret_mounts, (out, "/out", "rw")],
                            env={**env, "JOB_COMPLETION_INDEX": index}, entrypoint=command, detach=True)
            podman(*opts, "--ip", f"{SUBNET}.{FIRST_HOST + index}", *add_hosts, image,
                   *SHORT, "--data_dir=/data/tfds", "--output_dir=/out/mw", check=True)
        statuses = [podman("wait", f"fmnist-it-{RUN_ID}-{name}", timeout=900).stdout.strip() for name in names]
        outputs = [logs(f"fmnist-it-{RUN_ID}-{name}") for name in names]
    finally:
        remove(*names)
    assert statuses == ["0"] * count, "\n\n".join(log[-3000:] for log in outputs)
    for index, log in enumerate(outputs):
        assert f'"index":{index}' in log and "tf_config: TF_CONFIG=" in log, log[-2000:]
    metrics = assert_published(out / "mw")
    assert metrics["num_workers"] == count and metrics["strategy"] == "multi_worker_mirrored", metrics["strategy"]
    # Only the chief's outputs: one run folder, nothing from worker 1 beside or inside it.
    assert sorted(p.name for p in out.iterdir()) == ["mw"]
    strays = [str(p.relative_to(out)) for p in (out / "mw").rglob("*") if re.search(r"worker|staging|checkpoints",
                                                                                   p.name)]
    assert not strays, strays


def test_a_stopped_container_saves_its_step_and_resumes_there_in_a_new_one(image, prepared_data, out):
    """`podman stop` (SIGTERM, then SIGKILL after the grace period) during epoch 2; a new container resumes.

    The trainer is the container's PID 1, which the kernel shields from signals it has no handler for; the trainer
    blocks SIGTERM and takes it in a watcher thread (trainer/resilience/signals.py), which PID 1 receives like any
    process. So the stop must be the handled one: exit 75 well inside the grace period, the step in progress saved and
    named, and the new container resuming at the step after it (Keras's rule: after an epoch's last step, the next
    epoch's first), not at the last epoch's end.
    """
    # About 4 s per epoch here: SIGKILL after the grace period lands well before the last epoch.
    epochs, steps_per_epoch = 8, 1875  # 60,000 examples at the seed recipe's batch of 32
    flags = ["--model=mlp", "--recipe=seed", f"--epochs={epochs}", "--data_dir=/data/tfds", "--output_dir=/out/resume"]
    mounts = [*data_mounts(), (out, "/out", "rw")]
    name = f"fmnist-it-{RUN_ID}-stopped"
    grace = 10
    try:
        podman(*hardened("stopped", mounts=mounts, detach=True), image, *flags, check=True)
        deadline = time.monotonic() + 600
        while "epoch 1/" not in (log := logs(name)):  # epoch 2 is being trained
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running" and time.monotonic() < deadline, f"never reached epoch 2 ({state}):\n{log[-3000:]}"
            time.sleep(0.2)
        started = time.monotonic()
        podman("stop", f"--time={grace}", name, timeout=grace + 60, check=True)
        stop_seconds = time.monotonic() - started
        status = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
        first_log = logs(name)
    finally:
        remove("stopped")
    print(f"\nstopped in epoch 2: exit status {status} after {stop_seconds:.1f} s")
    assert status == 75, f"exit status {status} after SIGTERM (137: SIGKILLed, the stop was not handled):\n" \
                         f"{first_log[-3000:]}"
    assert stop_seconds < grace - 1, f"the handled stop took {stop_seconds:.1f} s of the {grace} s grace period"
    saved = re.search(r"Stopped by SIGTERM: saved the backup at epoch (\d+), step (\d+) of (\d+)", first_log)
    assert saved and int(saved[3]) == steps_per_epoch, f"no line naming the step saved:\n{first_log[-3000:]}"
    assert "Traceback" not in first_log
    assert not (out / "resume" / "metrics.json").exists(), "a stopped run must not look finished"
    # 0-based (epoch, step) the new container continues at: the step after the one saved.
    continued_epoch, continued_step = divmod((int(saved[1]) - 1) * steps_per_epoch + int(saved[2]), steps_per_epoch)

    try:
        result = podman(*hardened("resumed", mounts=mounts), image, *flags, timeout=900)
    finally:
        remove("resumed")
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert f"continuing at epoch {continued_epoch + 1}, step {continued_step + 1} of {steps_per_epoch}" in log, \
        f"the new container did not resume where the first saved ({saved[0]}):\n{log[-3000:]}"
    metrics = assert_published(out / "resume")
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (continued_epoch, continued_step)
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, epochs + 1)), metrics["history"]


def test_compare_runs_inside_the_image_without_matplotlib(short_run, image):
    folder, result = short_run
    assert result.returncode == 0, "the short run failed: see test_a_short_run_publishes_its_model_and_metrics"
    result = podman(*hardened("compare", mounts=[(folder, "/runs/mlp", "ro")], entrypoint=["python3"]), image,
                    "-m", "trainer.commands.compare", "/runs/mlp", "--no-report", timeout=300)
    remove("compare")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "mlp" in result.stdout and "Traceback" not in result.stderr, result.stdout + result.stderr[-2000:]
