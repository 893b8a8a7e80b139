"""The launchers, checked without a Docker engine, a cluster or a cloud: Dockerfile, k8s/, jobs/.

- Dockerfile: hadolint clean, pinned to requirements.txt's TensorFlow, non-root, and in step with the manifests
  (user, $HOME, TFDS data folder); .dockerignore sends what the Dockerfile copies and nothing big.
- k8s/: every kustomization renders (kubectl's kustomize), passes kubernetes-validate --strict, and checkov
  reports no failed check on it or on the Dockerfile; the multi-worker Job's pieces agree with each other, and
  its container command gives every pod the right TF_CONFIG.
- jobs/: the Vertex AI specs validate against jobs/customjobspec.schema.json (closed objects, API types), which
  is compared field by field with the Google Cloud SDK's aiplatform v1 client when the SDK is installed; the
  scripts pass shellcheck and build the right docker / gcloud command lines.

checkov, kubectl and shellcheck live in their own venv (requirements-lint.txt; checkov's pins clash with the
trainer's): build/lint-venv, or $FMNIST_LINT_VENV. Every checker is run for real; a missing one is a failure.
"""

import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "k8s"))
import tf_config  # noqa: E402  (k8s/tf_config.py: the multi-worker pods' launcher)

LINT_VENV = pathlib.Path(os.environ.get("FMNIST_LINT_VENV") or ROOT / "build" / "lint-venv")
MAIN_BIN = pathlib.Path(sys.executable).parent
KUSTOMIZATIONS = {"base": "k8s/base", "cpu": "k8s/overlays/cpu", "gpu": "k8s/overlays/gpu",
                  "multi-worker": "k8s/overlays/multi-worker"}
VERTEX_SPECS = ("gpu", "multi-worker")
# Kubernetes versions the manifests must be valid for: an old supported one and the newest schema we have.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# The only checkov findings suppressed in place, each with its reason next to it.
EXPECTED_SKIPS = {"CKV_K8S_43", "CKV_DOCKER_2", "CKV_DOCKER_7"}
QUIET_CHECKOV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def lint_tool(name):
    path = LINT_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: create the lint venv with `make lint-venv` "
                    f"(python3 -m venv {LINT_VENV} && {LINT_VENV}/bin/pip install -r requirements-lint.txt "
                    "-c constraints-lint.txt)")
    return str(path)


def run(cmd, **kwargs):
    kwargs.setdefault("cwd", ROOT)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def load_yaml_docs(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(job):
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def documented_overlay(folder):
    """docs/launch.md's example deployment overlay, written to `folder` (its base made relative to there)."""
    text = (ROOT / "docs" / "launch.md").read_text()
    block = re.search(r"<!-- deployment-overlay -->\n```yaml\n(.*?)```", text, re.S).group(1)
    assert "  - ../gpu " in block
    base = os.path.relpath(ROOT / "k8s" / "overlays" / "gpu", folder)
    (folder / "kustomization.yaml").write_text(block.replace("  - ../gpu ", f"  - {base} ", 1))
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{name: (path, docs)} of every kustomization (and the docs' example overlay), rendered by kubectl."""
    kubectl = lint_tool("kubectl")
    out = tmp_path_factory.mktemp("rendered")
    folders = {**KUSTOMIZATIONS, "docs-example": documented_overlay(tmp_path_factory.mktemp("docs-overlay"))}
    result = {}
    for name, folder in folders.items():
        proc = run([kubectl, "kustomize", folder])
        assert proc.returncode == 0, f"kubectl kustomize {folder} failed:\n{proc.stderr}"
        path = out / f"{name}.yaml"
        path.write_text(proc.stdout)
        result[name] = (path, load_yaml_docs(path))
    return result


@pytest.fixture(scope="module")
def schema():
    with open(ROOT / "jobs" / "customjobspec.schema.json") as f:
        loaded = json.load(f)
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


def dockerfile_text():
    return (ROOT / "Dockerfile").read_text()


def dockerfile_env():
    """ENV name=value pairs of the Dockerfile (the one multi-line ENV instruction style it uses)."""
    text = dockerfile_text().replace("\\\n", " ")
    pairs = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            pairs.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return pairs


# ---------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint():
    hadolint = MAIN_BIN / "hadolint"
    result = run([hadolint, "Dockerfile"])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # The one inline ignore hides exactly one finding (the VARIANT-selected stage); hadolint is really looking.
    unignored = run([hadolint, "--disable-ignore-pragma", "--no-color", "Dockerfile"])
    assert re.findall(r"\b(DL\d{4}|SC\d{4})\b", unignored.stdout) == ["DL3006"], unignored.stdout


def test_dockerfile_builds_the_pinned_tensorflow_as_a_non_root_trainer():
    text = dockerfile_text()
    pinned = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(r"^ARG TF_VERSION=(\S+)$", text, re.M).group(1) == pinned
    assert "FROM tensorflow/tensorflow:${TF_VERSION}-gpu AS base-gpu" in text
    assert "FROM tensorflow/tensorflow:${TF_VERSION} AS base-cpu" in text
    assert re.search(r"^ARG VARIANT=gpu$", text, re.M) and "FROM base-${VARIANT}" in text
    assert "pip install --no-cache-dir -r requirements.txt -c constraints.txt" in text
    assert "pip install --no-cache-dir --no-deps ." in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user == ["10001:10001"]
    assert re.search(r'^ENTRYPOINT \["fmnist-train"\]$', text, re.M)
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


# -------------------------------------------------------------------------------------------- Kubernetes


def test_every_kustomization_renders_valid_kubernetes(rendered, tmp_path):
    paths = [path for path, _ in rendered.values()]
    for version in KUBERNETES_VERSIONS:
        result = run([MAIN_BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, *paths])
        assert result.returncode == 0, f"Kubernetes {version}:\n{result.stdout}{result.stderr}"
    # The validator rejects what it should: a misspelt field (strict) and a wrong type.
    misspelt = copy.deepcopy(find(rendered["base"][1], "Job"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    mistyped = copy.deepcopy(find(rendered["base"][1], "Job"))
    mistyped["spec"]["backoffLimit"] = "three"
    for broken, complaint in ((misspelt, "imagePullPolcy"), (mistyped, "'three' is not of type 'integer'")):
        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(broken))
        result = run([MAIN_BIN / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSIONS[-1], path])
        assert result.returncode != 0 and complaint in result.stdout + result.stderr, result.stdout


def test_checkov_reports_no_failed_check(rendered, tmp_path):
    """One checkov run over every rendered manifest and the Dockerfile, plus an insecure Job as a control."""
    insecure = copy.deepcopy(find(rendered["base"][1], "Job"))
    pod = insecure["spec"]["template"]["spec"]
    del pod["securityContext"], pod["containers"][0]["securityContext"], pod["containers"][0]["resources"]
    control = tmp_path / "control" / "insecure.yaml"
    control.parent.mkdir()
    control.write_text(yaml.safe_dump(insecure))
    files = [path for path, _ in rendered.values()] + [ROOT / "Dockerfile", control]
    cmd = [lint_tool("checkov"), "--framework", "kubernetes", "dockerfile", "--skip-download", "--compact",
           "-o", "json"]
    for f in files:
        cmd += ["-f", f]
    result = run(cmd, env={**os.environ, **QUIET_CHECKOV}, timeout=300)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}

    failed, skipped, passed = [], [], 0
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        failed += report["results"]["failed_checks"]
        skipped += report["results"]["skipped_checks"]
        passed += len(report["results"]["passed_checks"])
    ours = [c for c in failed if "control" not in c["file_path"]]
    assert not ours, "\n".join(f"{c['check_id']} {c['check_name']} in {c['file_path']}" for c in ours)
    # The control proves the checks run: no securityContext, no resources -> the hardening checks fail.
    control_failed = {c["check_id"] for c in failed if "control" in c["file_path"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_11",
            "CKV_K8S_13"} <= control_failed, control_failed
    # Skips: only the expected ones, each with its reason in place.
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for c in skipped:
        assert len((c.get("check_result", {}).get("suppress_comment") or "").strip()) > 20, c["check_id"]
    assert passed > 300


def test_pods_match_the_image(rendered):
    """runAsUser, $HOME and the TFDS folder of the pods are the image's; what the image writes is a volume."""
    env = dockerfile_env()
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile_text(), re.M).groups()
    for name, (_, docs) in rendered.items():
        job = find(docs, "Job")
        pod = job["spec"]["template"]["spec"]
        c = container(job)
        assert str(pod["securityContext"]["runAsUser"]) == uid[0] == str(c["securityContext"]["runAsUser"])
        assert str(pod["securityContext"]["runAsGroup"]) == uid[1]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", env["HOME"], env["TFDS_DATA_DIR"]} <= mounts, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for m in c["volumeMounts"]:
            assert "emptyDir" in volumes[m["name"]], m
        for kind in ("cpu", "memory"):
            assert kind in c["resources"]["limits"] and kind in c["resources"]["requests"], name
        assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
        assert pod["restartPolicy"] == "OnFailure"


def test_output_goes_to_cloud_storage_through_workload_identity(rendered):
    for name, (_, docs) in rendered.items():
        assert not [d for d in docs if d["kind"] == "Secret"], name
        sa = find(docs, "ServiceAccount")
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
        job = find(docs, "Job")
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == sa["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert not [v for v in pod["volumes"] if "secret" in v or "projected" in v], name
        c = container(job)
        env = env_of(c)
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
        assert "--output_dir=$(OUTPUT_DIR)" in c["args"]
        ref = env["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]
        configmap = find(docs, "ConfigMap", ref["name"])
        assert configmap["data"][ref["key"]].startswith("gs://"), name


PARSE_FLAGS = r"""
import json, sys
from absl import flags
from trainer import flags as _  # defines the trainer's flags and their validators
results = []
for args in json.load(sys.stdin):
    try:
        flags.FLAGS(["fmnist-train", *args])
        results.append("ok")
    except flags.Error as error:
        results.append(str(error))
    flags.FLAGS.unparse_flags()
print(json.dumps(results))
"""


def test_trainer_flags_in_the_manifests_and_specs_are_real(rendered):
    argument_lists = [container(find(docs, "Job"))["args"] for _, docs in rendered.values()]
    for spec in VERTEX_SPECS:
        for pool in yaml.safe_load((ROOT / "jobs" / f"customjob-{spec}.yaml").read_text())["workerPoolSpecs"]:
            argument_lists.append(pool["containerSpec"]["args"])
    argument_lists = [[a.replace("$(OUTPUT_DIR)", "gs://bucket/run") for a in args] for args in argument_lists]
    control = ["--model=cnn", "--epoch=3"]  # a misspelt flag: the parser must refuse it
    result = run([sys.executable, "-c", PARSE_FLAGS], input=json.dumps([*argument_lists, control]))
    assert result.returncode == 0, result.stderr
    *verdicts, control_verdict = json.loads(result.stdout)
    assert verdicts == ["ok"] * len(argument_lists), list(zip(argument_lists, verdicts))
    assert "epoch" in control_verdict


def test_overlays_pick_their_image_and_hardware(rendered):
    cpu, gpu = container(find(rendered["cpu"][1], "Job")), container(find(rendered["gpu"][1], "Job"))
    assert cpu["image"].endswith("-cpu") and gpu["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    pod = find(rendered["gpu"][1], "Job")["spec"]["template"]["spec"]
    assert "cloud.google.com/gke-accelerator" in pod["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    for name in ("base", "cpu", "gpu"):
        job = find(rendered[name][1], "Job")
        assert "completionMode" not in job["spec"] and "command" not in container(job), name  # ENTRYPOINT


def test_the_documented_deployment_overlay_replaces_every_placeholder(rendered):
    path, docs = rendered["docs-example"]
    assert not re.search(r"PROJECT_ID|REGION|BUCKET", path.read_text())
    assert container(find(docs, "Job"))["image"] == (
        "us-central1-docker.pkg.dev/my-project/fmnist/fmnist-trainer@sha256:" + "0123456789abcdef" * 4)
    assert find(docs, "ServiceAccount")["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == \
        "fmnist-trainer@my-project.iam.gserviceaccount.com"
    # The shipped overlays are the ones with placeholders.
    assert "PROJECT_ID" in rendered["gpu"][0].read_text()


def test_multi_worker_job_is_an_indexed_job_behind_a_headless_service(rendered):
    docs = rendered["multi-worker"][1]
    job, service = find(docs, "Job"), find(docs, "Service")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    c = container(job)
    env = env_of(c)
    assert spec["completionMode"] == "Indexed"
    workers = spec["completions"]
    assert workers >= 2 and spec["parallelism"] == workers == int(env["WORKER_COUNT"]["value"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"] == env["WORKER_SERVICE"]["value"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port = int(env["TF_CONFIG_PORT"]["value"])
    assert [p["containerPort"] for p in c["ports"]] == [port] == [p["port"] for p in service["spec"]["ports"]]
    assert (env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    assert c["command"] == ["python3", "k8s/tf_config.py", "fmnist-train"]
    # Workers may reach each other's port, and only that.
    allow = [d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"].get("ingress")]
    assert len(allow) == 1
    assert allow[0]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for rule in allow[0]["spec"]["ingress"] for p in rule["ports"]] == [port]
    # Every pod's DNS name (<job>-<index>.<service>) is a valid host name.
    assert len(f"{job['metadata']['name']}-{workers - 1}") <= 63


def pod_environment(job, index):
    """The environment Kubernetes gives pod `index` of the rendered Indexed Job (fieldRefs resolved)."""
    fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
              "metadata.labels['job-name']": job["metadata"]["name"]}
    env = {}
    for e in container(job)["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_multi_worker_container_command_gives_each_pod_its_tf_config(rendered, tmp_path):
    """Runs the Job's exact container command per pod, with a stand-in trainer that reports what it got."""
    from trainer import distribution

    job = find(rendered["multi-worker"][1], "Job")
    c = container(job)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "fmnist-train").write_text(
        "#!/bin/sh\nprintf '%s\\n' \"$TF_CONFIG\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    (fake_bin / "fmnist-train").chmod(0o755)
    workers = job["spec"]["completions"]
    name, service = job["metadata"]["name"], job["spec"]["template"]["spec"]["subdomain"]
    port = c["ports"][0]["containerPort"]
    expected_hosts = [f"{name}-{i}.{service}:{port}" for i in range(workers)]
    chiefs = 0
    for index in range(workers):
        env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", **pod_environment(job, index)}
        result = run([*c["command"], *c["args"]], env=env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        config = json.loads(lines[0])
        assert config == {"cluster": {"worker": expected_hosts}, "task": {"type": "worker", "index": index}}
        assert lines[1:] == c["args"]
        assert distribution.cluster_size(config) == workers
        assert distribution.resolve("auto", config, num_gpus=0) == "multi_worker_mirrored"
        chiefs += distribution.is_chief(config)
    assert chiefs == 1


# ------------------------------------------------------------------------------ TF_CONFIG from the index


def test_tf_config_default_template_gives_the_indexed_job_dns_names():
    env = {"JOB_COMPLETION_INDEX": "2", "WORKER_COUNT": "3", "JOB_NAME": "fmnist-multi-worker",
           "WORKER_SERVICE": "fmnist-workers"}
    assert tf_config.build_tf_config(env) == {
        "cluster": {"worker": ["fmnist-multi-worker-0.fmnist-workers:2222", "fmnist-multi-worker-1.fmnist-workers:2222",
                               "fmnist-multi-worker-2.fmnist-workers:2222"]},
        "task": {"type": "worker", "index": 2}}
    env["TF_CONFIG_PORT"] = "3000"
    assert tf_config.build_tf_config(env)["cluster"]["worker"][0] == "fmnist-multi-worker-0.fmnist-workers:3000"


def test_tf_config_hosts_are_injectable_for_local_processes():
    env = {"JOB_COMPLETION_INDEX": "1", "TF_CONFIG_HOSTS": "localhost:23456, localhost:23457",
           "JOB_NAME": "ignored", "WORKER_SERVICE": "ignored"}
    assert tf_config.build_tf_config(env) == {
        "cluster": {"worker": ["localhost:23456", "localhost:23457"]}, "task": {"type": "worker", "index": 1}}
    env["WORKER_COUNT"] = "2"
    assert tf_config.build_tf_config(env)["task"]["index"] == 1
    templated = {"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "WORKER_HOST_TEMPLATE": "127.0.0.1:2000{index}"}
    assert tf_config.build_tf_config(templated)["cluster"]["worker"] == ["127.0.0.1:20000", "127.0.0.1:20001"]


@pytest.mark.parametrize("env, message", [
    ({"WORKER_COUNT": "2", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "JOB_COMPLETION_INDEX is not set"),
    ({"JOB_COMPLETION_INDEX": "2", "WORKER_COUNT": "2", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "out of range"),
    ({"JOB_COMPLETION_INDEX": "-1", "WORKER_COUNT": "2", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "at least 0"),
    ({"JOB_COMPLETION_INDEX": "x", "WORKER_COUNT": "2", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "whole number"),
    ({"JOB_COMPLETION_INDEX": "0", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "WORKER_COUNT is not set"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "0", "JOB_NAME": "j", "WORKER_SERVICE": "s"}, "at least 1"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "WORKER_SERVICE": "s"}, "JOB_NAME is not set"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "JOB_NAME": "j"}, "WORKER_SERVICE is not set"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "WORKER_HOST_TEMPLATE": "h:1"}, "must contain {index}"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "WORKER_HOST_TEMPLATE": "h{index}:{nope}"}, "not usable"),
    ({"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "WORKER_HOST_TEMPLATE": "h{index}"}, "not HOST:PORT"),
    ({"JOB_COMPLETION_INDEX": "0", "TF_CONFIG_HOSTS": "a:1,a:1"}, "not all different"),
    ({"JOB_COMPLETION_INDEX": "0", "TF_CONFIG_HOSTS": "a:1,b:2", "WORKER_COUNT": "3"}, "names 2 workers"),
])
def test_tf_config_rejects_a_bad_environment(env, message):
    with pytest.raises(tf_config.ConfigError, match=re.escape(message)):
        tf_config.build_tf_config(env)


def test_tf_config_launcher_fails_in_one_line_before_the_trainer(tmp_path):
    script = ROOT / "k8s" / "tf_config.py"
    marker = tmp_path / "ran"
    base = {"PATH": os.environ["PATH"], "JOB_COMPLETION_INDEX": "0", "TF_CONFIG_HOSTS": "localhost:1"}
    bad = run([sys.executable, script, "touch", marker], env={**base, "JOB_COMPLETION_INDEX": "5"})
    assert bad.returncode == 2 and not marker.exists()
    assert bad.stderr.strip().splitlines() == ["tf_config: error: JOB_COMPLETION_INDEX=5 is out of range for 1 workers"]
    preset = run([sys.executable, script, "touch", marker], env={**base, "TF_CONFIG": "{}"})
    assert preset.returncode == 2 and "already set" in preset.stderr and not marker.exists()
    missing = run([sys.executable, script, "no-such-command-fmnist"], env=base)
    assert missing.returncode == 127 and "cannot run" in missing.stderr
    assert run([sys.executable, script], env=base).returncode == 2
    ok = run([sys.executable, script, "touch", marker], env=base)
    assert ok.returncode == 0 and marker.exists()


# ------------------------------------------------------------------------------------------ Vertex AI


def vertex_spec(name):
    return yaml.safe_load((ROOT / "jobs" / f"customjob-{name}.yaml").read_text())


@pytest.mark.parametrize("name", VERTEX_SPECS)
def test_vertex_spec_matches_the_customjobspec_schema(schema, name):
    spec = vertex_spec(name)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema.iter_errors(spec)]
    assert not errors, errors
    pools = spec["workerPoolSpecs"]
    assert pools[0]["replicaCount"] == 1  # Vertex: the primary pool has exactly one replica
    for pool in pools:
        machine = pool["machineSpec"]
        assert machine["acceleratorType"].startswith("NVIDIA_") and machine["acceleratorCount"] >= 1
        assert pool["containerSpec"]["imageUri"].endswith("-gpu")
        assert pool["containerSpec"] == pools[0]["containerSpec"]
        assert not any(a.startswith("--output_dir") for a in pool["containerSpec"]["args"])  # AIP_MODEL_DIR
    assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://")
    if len(pools) > 1:
        assert spec["scheduling"]["restartJobOnWorkerRestart"] is True


@pytest.mark.parametrize("mutate, complaint", [
    (lambda s: s["workerPoolSpecs"][0]["machineSpec"].update(acceleratorTyp="NVIDIA_TESLA_T4"), "acceleratorTyp"),
    (lambda s: s.update(displayName="fmnist"), "displayName"),  # a flag of gcloud, not a CustomJobSpec field
    (lambda s: s["workerPoolSpecs"][0]["machineSpec"].update(acceleratorType="NVIDIA_TESLA_T5"), "NVIDIA_TESLA_T5"),
    (lambda s: s["workerPoolSpecs"][0].update(replicaCount=True), "True"),
    (lambda s: s["workerPoolSpecs"][0]["containerSpec"].update(args="--model=cnn"), "--model=cnn"),
    (lambda s: s["workerPoolSpecs"][0]["containerSpec"].update(env=[{"name": "A"}]), "'value' is a required"),
    (lambda s: s["workerPoolSpecs"][0].pop("containerSpec"), "is not valid under any"),
    (lambda s: s["workerPoolSpecs"][0].pop("machineSpec"), "'machineSpec' is a required"),
    (lambda s: s.update(scheduling={"timeout": 3600}), "3600"),
    (lambda s: s.update(baseOutputDirectory={"outputUriPrefix": "/local/path"}), "/local/path"),
    (lambda s: s.update(workerPoolSpecs=[{}]), "should be non-empty"),
])
def test_the_schema_rejects_what_vertex_would(schema, mutate, complaint):
    spec = vertex_spec("gpu")
    mutate(spec)
    messages = " | ".join(e.message for e in schema.iter_errors(spec))
    assert complaint in messages


def google_cloud_sdk():
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    root = pathlib.Path(gcloud).resolve().parent.parent
    lib = root / "lib" / "googlecloudsdk" / "generated_clients" / "apis" / "aiplatform" / "v1"
    return root if lib.is_dir() else None


SDK_CHECK = r'''
import json, sys
root = sys.argv[1]
sys.path[:0] = [root + "/lib", root + "/lib/third_party"]
from apitools.base.protorpclite import messages as pm
from googlecloudsdk.generated_clients.apis.aiplatform.v1 import aiplatform_v1_messages as m
from googlecloudsdk.command_lib.export import util as export_util

def kind(field):
    if isinstance(field, pm.EnumField):
        return {"enum": sorted(field.type.names())}
    if isinstance(field, pm.MessageField):
        return {"message": field.type.__name__}
    return {pm.StringField: "string", pm.BooleanField: "boolean", pm.IntegerField: "integer",
            pm.FloatField: "number", pm.BytesField: "string"}[type(field)]

def unrecognized(message, path=""):
    found = [path + "/" + name for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        values = getattr(message, field.name)
        values = values if field.repeated else [values]
        for i, value in enumerate(values):
            if isinstance(value, pm.Message):
                found += unrecognized(value, f"{path}/{field.name}[{i}]")
    return found

request = json.load(sys.stdin)
fields = {}
for name in request["messages"]:
    cls = getattr(m, name)
    fields[name] = {f.name: {"repeated": f.repeated, "kind": kind(f)} for f in cls.all_fields()}
parsed = {}
for path in request["specs"]:
    with open(path) as f:
        message = export_util.Import(message_type=m.GoogleCloudAiplatformV1CustomJobSpec, stream=f.read())
    parsed[path] = unrecognized(message)
print(json.dumps({"fields": fields, "unrecognized": parsed}))
'''


def test_schema_and_specs_agree_with_the_google_cloud_sdk(schema):
    """Every field of the schema is the SDK's aiplatform v1 client's, with its type; the specs parse cleanly."""
    root = google_cloud_sdk()
    if root is None:
        pytest.skip("the Google Cloud SDK (gcloud) is not installed: the schema is checked on its own")
    python = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    python = python if python.exists() else sys.executable
    defs = schema.schema["$defs"]
    messages = {d["x-message"]: name for name, d in defs.items() if "x-message" in d}
    specs = [str(ROOT / "jobs" / f"customjob-{name}.yaml") for name in VERTEX_SPECS]
    result = run([python, "-c", SDK_CHECK, root], input=json.dumps({"messages": list(messages), "specs": specs}))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["unrecognized"] == {path: [] for path in specs}

    def resolve(prop):
        return defs[prop["$ref"].split("/")[-1]] if "$ref" in prop else prop

    for message, def_name in messages.items():
        sdk_fields = answer["fields"][message]
        properties = defs[def_name]["properties"]
        assert set(properties) == set(sdk_fields), f"{def_name}: {set(properties) ^ set(sdk_fields)}"
        for field, sdk in sdk_fields.items():
            prop = resolve(properties[field])
            if sdk["repeated"]:
                assert prop["type"] == "array", (def_name, field)
                prop = resolve(prop["items"])
            kind = sdk["kind"]
            if isinstance(kind, dict) and "message" in kind:
                assert prop.get("x-message") == kind["message"], (def_name, field)
            elif isinstance(kind, dict):
                assert sorted(prop["enum"]) == kind["enum"], (def_name, field)
            elif kind == "integer":
                assert prop == defs["int"], (def_name, field)
            elif field in ("timeout", "maxWaitDuration"):
                assert prop == defs["duration"], (def_name, field)  # google.protobuf.Duration, a string
            else:
                assert prop["type"] == kind, (def_name, field)


# ------------------------------------------------------------------------------------------- scripts


def test_scripts_pass_shellcheck():
    scripts = sorted((ROOT / "jobs").glob("*.sh"))
    assert len(scripts) >= 2
    result = run([lint_tool("shellcheck"), *scripts])
    assert result.returncode == 0, result.stdout


def fake_client(folder, name):
    """A stand-in `docker`/`gcloud` that records its arguments (and a copy of any --config file)."""
    folder.mkdir(exist_ok=True)
    log = folder / f"{name}.args"
    script = folder / name
    script.write_text(f"""#!/bin/sh
: > '{log}'
for a in "$@"; do
  printf '%s\\n' "$a" >> '{log}'
  case "$a" in --config=*) cp "${{a#--config=}}" '{folder}/{name}.config' ;; esac
done
""")
    script.chmod(0o755)
    return script, log


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


def test_submit_vertex_fills_in_the_spec_and_calls_gcloud(tmp_path, schema):
    gcloud, log = fake_client(tmp_path / "bin", "gcloud")
    env = {"PATH": os.environ["PATH"], "GCLOUD": str(gcloud), "PROJECT_ID": "my-project", "REGION": "europe-west4",
           "BUCKET": "gs://my-bucket", "DISPLAY_NAME": "fmnist-test", "TMPDIR": str(tmp_path)}
    for name in VERTEX_SPECS:
        result = run([ROOT / "jobs" / "submit_vertex.sh", name], env=env)
        assert result.returncode == 0, result.stderr
        args = log.read_text().splitlines()
        assert args[:3] == ["ai", "custom-jobs", "create"]
        assert {"--project=my-project", "--region=europe-west4", "--display-name=fmnist-test"} <= set(args)
        config = (tmp_path / "bin" / "gcloud.config").read_text()
        spec = yaml.safe_load(config)
        assert not list(schema.iter_errors(spec))
        assert not re.search(r"PROJECT_ID|REGION|BUCKET", re.sub(r"(?m)^\s*#.*$", "", config))
        assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://my-bucket/fmnist/")
        assert spec["serviceAccount"] == "fmnist-trainer@my-project.iam.gserviceaccount.com"
        for pool in spec["workerPoolSpecs"]:
            assert pool["containerSpec"]["imageUri"] == \
                "europe-west4-docker.pkg.dev/my-project/fmnist/fmnist-trainer:0.1.0-gpu"
        assert not list(tmp_path.glob("fmnist-customjob-*")), "the filled-in spec was left behind"

    custom = run([ROOT / "jobs" / "submit_vertex.sh", "gpu"], env={**env, "IMAGE_URI": "example.com/img@sha256:ab"})
    assert custom.returncode == 0
    assert "imageUri: example.com/img@sha256:ab" in (tmp_path / "bin" / "gcloud.config").read_text()
    dry = run([ROOT / "jobs" / "submit_vertex.sh", "gpu", "--dry-run"], env=env)
    assert dry.returncode == 0 and dry.stdout.startswith(f"{gcloud} ai custom-jobs create")
    kept = re.search(r"--config=(\S+)", dry.stdout).group(1)
    assert not list(schema.iter_errors(yaml.safe_load(pathlib.Path(kept).read_text())))
    no_bucket = {k: v for k, v in env.items() if k != "BUCKET"}
    assert run([ROOT / "jobs" / "submit_vertex.sh", "gpu"], env=no_bucket).returncode == 2
    assert run([ROOT / "jobs" / "submit_vertex.sh", "tpu"], env=env).returncode == 2
