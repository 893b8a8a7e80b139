"""The launchers, checked without a Docker engine, a cluster or a cloud: Dockerfile, k8s/, jobs/.

- Dockerfile: hadolint clean, pinned to requirements.txt's TensorFlow, non-root, and in step with the manifests
  (user, $HOME, TFDS data folder); .dockerignore sends what the Dockerfile copies and nothing big.
- k8s/: every kustomization renders (kubectl's kustomize); the core kinds, and the Jobs inside the JobSet and
  the Katib Experiment, pass kubernetes-validate --strict; the JobSet and the Experiment match their projects'
  published API models (kubeflow-trainer-api, kubeflow-katib-api), an unknown field being an error; checkov
  reports no failed check; every Job's podFailurePolicy (and the JobSet's failurePolicy) acts on the trainer's
  exit codes as the contract says; the multi-worker JobSet's pieces agree with each other, and its container
  command gives every pod the right TF_CONFIG.
- jobs/: the Vertex AI specs validate against jobs/customjobspec.schema.json and jobs/hptuningjob.schema.json
  (closed objects, API types), which are compared field by field with the Google Cloud SDK's aiplatform v1
  client when the SDK is installed; the scripts pass shellcheck and build the right docker / gcloud command
  lines, the python-package upload lands in a local Cloud Storage emulator, and the real gcloud CLI submits every
  job to a local stand-in for the Vertex AI API, which receives exactly the specs.

checkov, kubectl and shellcheck live in their own venv (requirements-lint.txt; checkov's pins clash with the
trainer's): build/lint-venv, or $FMNIST_LINT_VENV. Every checker is run for real; a missing one is a failure.
"""

import copy
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import typing

import jsonschema
import pydantic
import pytest
import referencing
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "k8s"))
import tf_config  # noqa: E402  (k8s/tf_config.py: the multi-worker pods' launcher)
import gcloud_sdk  # noqa: E402,I100  (tests/gcloud_sdk.py: the Google Cloud SDK's aiplatform client)
from launch_tools import (KUBERNETES_VERSIONS, MAIN_BIN, QUIET_CHECKOV, fake_client, find,  # noqa: E402,I100
                          flag_verdicts, lint_tool, run)

# The launchers' checks run the checkers and launchers as processes (hadolint, kubectl, kubernetes-validate,
# checkov, shellcheck, gcloud, the scripts), or read what kubectl rendered: the end-to-end layer (`make test`).
pytestmark = pytest.mark.e2e

KUSTOMIZATIONS = {"base": "k8s/base", "cpu": "k8s/overlays/cpu", "gpu": "k8s/overlays/gpu",
                  "multi-worker": "k8s/overlays/multi-worker", "katib": "k8s/katib"}
VERTEX_SPECS = ("gpu", "gpu-spot", "multi-worker", "python-package")
HPTUNING_SPEC = ROOT / "jobs" / "hptuning-gpu.yaml"
# The only checkov findings suppressed in place, each with its reason next to it.
EXPECTED_SKIPS = {"CKV_K8S_43", "CKV_DOCKER_2"}
# The trainer's exit codes (README, "Exit codes"): what a launcher must do with each.
EXIT_FINISHED, EXIT_PERMANENT, EXIT_RETRY, EXIT_CRASH = 0, 2, 75, 1
# Kinds that a cluster only knows with their controller installed: validated against their own API models.
CUSTOM_KINDS = {"JobSet", "Experiment"}


def load_yaml_docs(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


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
    assert 'python3 -I -c "import trainer.task, trainer.train"' in body and "--help" not in body
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


# -------------------------------------------------------------------------------------------- Kubernetes


def workloads(docs):
    """{name: Job} of every Job a rendering creates: its batch/v1 Jobs, and those inside a JobSet (one per
    replicated Job, named as JobSet names its first child) or a Katib Experiment (its trial template)."""
    found = {}
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Job":
            found[meta["name"]] = doc
        elif doc["kind"] == "JobSet":
            for replicated in doc["spec"]["replicatedJobs"]:
                name = f"{meta['name']}-{replicated['name']}-0"
                found[name] = {"apiVersion": "batch/v1", "kind": "Job",
                               "metadata": {"name": name, "namespace": meta["namespace"],
                                            "annotations": meta.get("annotations", {}),
                                            "labels": {"job-name": name}},
                               "spec": replicated["template"]["spec"]}
        elif doc["kind"] == "Experiment":
            trial = doc["spec"]["trialTemplate"]["trialSpec"]
            name = f"{meta['name']}-trial"
            found[name] = {"apiVersion": trial["apiVersion"], "kind": trial["kind"],
                           "metadata": {"name": name, "namespace": meta["namespace"],
                                        "annotations": meta.get("annotations", {})},
                           "spec": trial["spec"]}
    return found


def the_job(docs):
    jobs = workloads(docs)
    assert len(jobs) == 1, list(jobs)
    return next(iter(jobs.values()))


@pytest.fixture(scope="module")
def kubernetes_files(rendered, tmp_path_factory):
    """{name: path} of each rendering's core-kind documents plus the Jobs inside its JobSet or Experiment."""
    out = tmp_path_factory.mktemp("core")
    files = {}
    for name, (_, docs) in rendered.items():
        core = [d for d in docs if d["kind"] not in CUSTOM_KINDS and d["kind"] != "Job"] + \
            list(workloads(docs).values())
        files[name] = out / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump_all(core))
    return files


def test_every_kustomization_renders_valid_kubernetes(rendered, kubernetes_files, tmp_path):
    assert {d["kind"] for _, docs in rendered.values() for d in docs} - CUSTOM_KINDS <= {
        "Namespace", "ServiceAccount", "ConfigMap", "NetworkPolicy", "Job", "Service"}
    paths = list(kubernetes_files.values())
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


def unknown_fields(model, value, path=""):
    """Paths of `value` (a manifest's dict) that the pydantic API model `model`, or a model it nests, lacks.

    The generated models' from_dict checks types and enums but silently drops a field it does not know: this
    walks the same models and makes every such field an error."""
    if "actual_instance" in model.model_fields or not isinstance(value, dict):  # a oneOf (int-or-string...)
        return []
    fields = {(field.alias or name): field for name, field in model.model_fields.items()}
    found = []
    for key, item in value.items():
        if key in fields:
            found += _unknown_nested(fields[key].annotation, item, f"{path}/{key}")
        else:
            found.append(f"{path}/{key}")
    return found


def _unknown_nested(annotation, value, path):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return [p for arg in args if arg is not type(None) for p in _unknown_nested(arg, value, path)]
    if origin is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown_nested(args[0], item, f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [p for key, item in value.items() for p in _unknown_nested(args[1], item, f"{path}[{key}]")]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return unknown_fields(annotation, value, path)
    return []


def model_errors(model, value):
    """Why the published API model rejects `value`: unknown fields, then types and enums (from_dict)."""
    unknown = unknown_fields(model, value)
    if unknown:
        return [f"unknown field {p}" for p in unknown]
    try:
        model.from_dict(value)
    except (pydantic.ValidationError, ValueError) as error:
        return [str(error)]
    return []


def api_models():
    from kubeflow_katib_api.models.v1beta1_experiment import V1beta1Experiment
    from kubeflow_trainer_api.models.jobset_v1alpha2_failure_policy_rule import JobsetV1alpha2FailurePolicyRule
    from kubeflow_trainer_api.models.jobset_v1alpha2_job_set import JobsetV1alpha2JobSet
    return {"JobSet": JobsetV1alpha2JobSet, "Experiment": V1beta1Experiment,
            "JobSetRule": JobsetV1alpha2FailurePolicyRule}


def test_jobset_and_experiment_match_their_published_api_models(rendered):
    models = api_models()
    jobset = find(rendered["multi-worker"][1], "JobSet")
    experiment = find(rendered["katib"][1], "Experiment")
    for doc in (jobset, experiment):
        assert doc["apiVersion"] == {"JobSet": "jobset.x-k8s.io/v1alpha2", "Experiment": "kubeflow.org/v1beta1"}[
            doc["kind"]]
        assert model_errors(models[doc["kind"]], doc) == [], doc["kind"]
    # The models say the values in words only: JobSet's failure-policy actions (the rule's own description),
    # restart strategies (JobSet's API enum), Job failure reasons (batch/v1); Katib's documented names.
    policy = jobset["spec"]["failurePolicy"]
    actions = re.search(r"Valid values are ([\w, ]+)\.", models["JobSetRule"].model_fields["action"].description)
    assert {rule["action"] for rule in policy["rules"]} <= {a.strip() for a in actions.group(1).split(",")}
    assert policy["restartStrategy"] in {"Recreate", "BlockingRecreate", "InPlaceRestart"}
    name_rule = re.search(r'must match the regular expression "(.+?)"\.',
                          models["JobSetRule"].model_fields["name"].description)
    assert all(re.fullmatch(name_rule.group(1), rule["name"]) for rule in policy["rules"]), name_rule.group(1)
    reasons = {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded"}
    assert {r for rule in policy["rules"] for r in rule.get("onJobFailureReasons", [])} <= reasons
    spec = experiment["spec"]
    assert spec["objective"]["type"] in {"maximize", "minimize"}
    assert spec["metricsCollectorSpec"]["collector"]["kind"] in {
        "StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None"}
    assert spec["algorithm"]["algorithmName"] in {
        "random", "grid", "hyperband", "bayesianoptimization", "tpe", "multivariate-tpe", "cmaes", "sobol", "pbt"}
    for parameter in spec["parameters"]:
        assert parameter["parameterType"] in {"double", "int", "discrete", "categorical"}
        assert parameter["feasibleSpace"].get("distribution", "uniform") in {
            "uniform", "logUniform", "normal", "logNormal"}
    assert {s["value"] for s in spec["objective"]["metricStrategies"]} <= {"min", "max", "latest"}

    # The models reject what they should: an unknown field anywhere (even inside the pod template), a wrong type.
    controls = []
    broken = copy.deepcopy(jobset)
    broken["spec"]["failurePolicy"]["maxRestart"] = 3
    controls.append(("JobSet", broken, "unknown field /spec/failurePolicy/maxRestart"))
    broken = copy.deepcopy(jobset)
    broken["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = 1
    controls.append(("JobSet", broken, "containers[0]/imagePullPolcy"))
    broken = copy.deepcopy(jobset)
    broken["spec"]["failurePolicy"]["maxRestarts"] = "4"
    controls.append(("JobSet", broken, "Input should be a valid integer"))
    broken = copy.deepcopy(experiment)
    broken["spec"]["objective"]["objectiveMetric"] = "val_accuracy"
    controls.append(("Experiment", broken, "unknown field /spec/objective/objectiveMetric"))
    broken = copy.deepcopy(experiment)
    broken["spec"]["parameters"][0]["feasibleSpace"]["min"] = 0.0001
    controls.append(("Experiment", broken, "Input should be a valid string"))
    for kind, doc, complaint in controls:
        errors = model_errors(models[kind], doc)
        assert errors and complaint in " ".join(errors), (kind, complaint, errors)


def test_checkov_reports_no_failed_check(rendered, kubernetes_files, tmp_path):
    """One checkov run over every rendered manifest (and the Jobs inside the JobSet and the Experiment, which
    checkov does not look into by itself) and the Dockerfile, plus an insecure Job as a control."""
    insecure = copy.deepcopy(find(rendered["base"][1], "Job"))
    pod = insecure["spec"]["template"]["spec"]
    del pod["securityContext"], pod["containers"][0]["securityContext"], pod["containers"][0]["resources"]
    control = tmp_path / "control" / "insecure.yaml"
    control.parent.mkdir()
    control.write_text(yaml.safe_dump(insecure))
    files = [path for path, _ in rendered.values()] + [kubernetes_files["multi-worker"], kubernetes_files["katib"],
                                                       ROOT / "Dockerfile", control]
    cmd = [lint_tool("checkov"), "--framework", "kubernetes", "dockerfile", "--skip-download", "--compact",
           "-o", "json"]
    for f in files:
        cmd += ["-f", f]
    result = run(cmd, env={**os.environ, **QUIET_CHECKOV}, timeout=300)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}

    failed, skipped, passed = [], [], []
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        failed += report["results"]["failed_checks"]
        skipped += report["results"]["skipped_checks"]
        passed += report["results"]["passed_checks"]
    ours = [c for c in failed if "control" not in c["file_path"]]
    assert not ours, "\n".join(f"{c['check_id']} {c['check_name']} in {c['file_path']}" for c in ours)
    # The control proves the checks run: no securityContext, no resources -> the hardening checks fail.
    control_failed = {c["check_id"] for c in failed if "control" in c["file_path"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_11",
            "CKV_K8S_13"} <= control_failed, control_failed
    # ... and they ran on the Jobs taken out of the JobSet and the Experiment.
    for name in ("multi-worker", "katib"):
        checked = {c["check_id"] for c in passed if c["file_path"].endswith(f"/{name}.yaml")
                   and "core" in c["file_path"]}
        assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= checked, (name, checked)
    # Skips: only the expected ones, each with its reason in place.
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for c in skipped:
        assert len((c.get("check_result", {}).get("suppress_comment") or "").strip()) > 20, c["check_id"]
    assert len(passed) > 300


def test_pods_match_the_image(rendered):
    """runAsUser, $HOME and the TFDS folder of the pods are the image's; what the image writes is a volume."""
    env = dockerfile_env()
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile_text(), re.M).groups()
    for name, (_, docs) in rendered.items():
        job = the_job(docs)
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
        assert job["spec"]["activeDeadlineSeconds"] > 0
        # podFailurePolicy judges every failure as a new pod: it requires restartPolicy Never.
        assert pod["restartPolicy"] == "Never" and job["spec"]["podFailurePolicy"]["rules"], name


def pod_failure_action(job, exit_code, disrupted=False):
    """What the Job controller does with a failed pod of `job` (podFailurePolicy: first matching rule wins; none
    matching: Count), and the Job's failure message when the action is FailJob (Kubernetes' wording)."""
    pod = f"{job['metadata'].get('namespace', 'fmnist')}/{job['metadata']['name']}-abcde"
    for index, rule in enumerate(job["spec"].get("podFailurePolicy", {}).get("rules", [])):
        on_codes, on_conditions = rule.get("onExitCodes"), rule.get("onPodConditions", [])
        if on_codes:
            assert on_codes.get("containerName", "trainer") == "trainer"
            matched = (exit_code in on_codes["values"]) == (on_codes["operator"] == "In")
            message = f"Container trainer for pod {pod} failed with exit code {exit_code}"
        else:
            matched = disrupted and any(c["type"] == "DisruptionTarget" and c.get("status", "True") == "True"
                                        for c in on_conditions)
            message = f"Pod {pod} has condition DisruptionTarget"
        if matched:
            return rule["action"], f"{message} matching {rule['action']} rule at index {index}"
    return "Count", None


def jobset_action(jobset, reason, message):
    """What the JobSet controller does with a failed child Job (failurePolicy: first matching rule wins; none
    matching: RestartJobSet)."""
    for rule in jobset["spec"]["failurePolicy"].get("rules", []):
        if rule.get("onJobFailureReasons") and reason not in rule["onJobFailureReasons"]:
            continue
        patterns = rule.get("onJobFailureMessagePatterns")
        if patterns and not any(re.search(p, message or "") for p in patterns):
            continue
        return rule["action"]
    return "RestartJobSet"


def test_failure_policies_act_on_the_exit_code_contract(rendered):
    """Exit 2 (permanent) fails the Job or JobSet at once; 75 (retry me) and 1 (a crash) retry, counted; a
    disruption (preemption, eviction, drain) retries without counting. Multi-worker: any failure restarts every
    worker together."""
    contract = [(EXIT_PERMANENT, False), (EXIT_RETRY, False), (EXIT_CRASH, False), (137, False), (143, True),
                (EXIT_RETRY, True)]
    for name, (_, docs) in rendered.items():
        if name == "multi-worker":
            continue
        job = the_job(docs)
        actions = [pod_failure_action(job, code, disrupted)[0] for code, disrupted in contract]
        assert actions == ["FailJob", "Count", "Count", "Count", "Ignore", "Ignore"], name
        assert 1 <= job["spec"]["backoffLimit"] <= 6, name
        # Never two trainers on one backup: a replacement waits for the failed pod to be gone.
        assert job["spec"]["podReplacementPolicy"] == "Failed", name

    docs = rendered["multi-worker"][1]
    jobset = find(docs, "JobSet")
    child = the_job(docs)
    assert child["spec"]["backoffLimit"] == 0  # one failed pod fails the child Job, so the JobSet acts at once
    verdicts = []
    for code, disrupted in contract:
        action, message = pod_failure_action(child, code, disrupted)
        reason = "PodFailurePolicy" if action == "FailJob" else "BackoffLimitExceeded"
        verdicts.append(jobset_action(jobset, reason, message))
    assert verdicts == ["FailJobSet", "RestartJobSet", "RestartJobSet", "RestartJobSet",
                        "RestartJobSetAndIgnoreMaxRestarts", "RestartJobSetAndIgnoreMaxRestarts"]
    assert jobset_action(jobset, "DeadlineExceeded", "Job was active longer than specified deadline") == "FailJobSet"
    policy = jobset["spec"]["failurePolicy"]
    assert 1 <= policy["maxRestarts"] <= 6 and policy["restartStrategy"] == "BlockingRecreate"
    # A message pattern must not match another exit code's message (exit code 21, 12).
    for other in (21, 12, 20):
        message = f"Container trainer for pod fmnist/p failed with exit code {other} matching FailJob rule at index 0"
        assert jobset_action(jobset, "PodFailurePolicy", message) == "RestartJobSet", other


def test_output_goes_to_cloud_storage_through_workload_identity(rendered):
    for name, (_, docs) in rendered.items():
        assert not [d for d in docs if d["kind"] == "Secret"], name
        sa = find(docs, "ServiceAccount")
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
        job = the_job(docs)
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == sa["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert not [v for v in pod["volumes"] if "secret" in v or "projected" in v], name
        c = container(job)
        env = env_of(c)
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
        assert [a for a in c["args"] if a.startswith("--output_dir=$(OUTPUT_DIR)")], name
        ref = env["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]
        configmap = find(docs, "ConfigMap", ref["name"])  # the generated name, hash suffix included
        assert configmap["data"][ref["key"]].startswith("gs://"), name


def katib_trials(experiment):
    """The argument lists of the trials Katib would start at the corners of the search space (each parameter at
    its lowest and at its highest value), trial parameters substituted as Katib does."""
    spec = experiment["spec"]
    references = {p["name"]: p["reference"] for p in spec["trialTemplate"]["trialParameters"]}
    args = container({"spec": spec["trialTemplate"]["trialSpec"]["spec"]})["args"]
    corners = []
    for pick in (0, -1):
        values = {}
        for parameter in spec["parameters"]:
            space = parameter["feasibleSpace"]
            values[parameter["name"]] = space["list"][pick] if "list" in space else space[("min", "max")[pick]]
        values["${trialSpec.Name}"] = "fmnist-tuning-abc123"
        substituted = []
        for arg in args:
            for name, reference in references.items():
                arg = arg.replace("${trialParameters.%s}" % name, values[reference])
            substituted.append(arg)
        assert "${" not in " ".join(substituted), substituted
        corners.append(substituted)
    return corners


def vertex_trials(job):
    """The argument lists of the Vertex AI trials at the corners of the search space: the trial's args, then
    --PARAMETER_ID=VALUE for every parameter, as Vertex AI appends them."""
    base = job["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    corners = []
    for bound in ("minValue", "maxValue"):
        extra = []
        for parameter in job["studySpec"]["parameters"]:
            value_spec = parameter.get("doubleValueSpec") or parameter.get("integerValueSpec")
            extra.append(f"--{parameter['parameterId']}={value_spec[bound]}")
        corners.append([*base, *extra])
    return corners


def test_trainer_flags_in_the_manifests_and_specs_are_real(rendered):
    argument_lists = [container(the_job(docs))["args"] for name, (_, docs) in rendered.items() if name != "katib"]
    argument_lists += katib_trials(find(rendered["katib"][1], "Experiment"))
    for spec in VERTEX_SPECS:
        for pool in vertex_spec(spec)["workerPoolSpecs"]:
            argument_lists.append((pool.get("containerSpec") or pool["pythonPackageSpec"])["args"])
    argument_lists += vertex_trials(yaml.safe_load(HPTUNING_SPEC.read_text()))
    argument_lists = [[re.sub(r"\$\(OUTPUT_DIR\)", "gs://bucket/run", a) for a in args] for args in argument_lists]
    control = ["--model=cnn", "--epoch=3"]  # a misspelt flag: the parser must refuse it
    out_of_range = ["--model=cnn", "--learning_rate=10"]  # outside the validator's (0, 10)
    *verdicts, control_verdict, range_verdict = flag_verdicts(
        "fmnist-train", "trainer.flags", [*argument_lists, control, out_of_range])
    assert verdicts == ["ok"] * len(argument_lists), list(zip(argument_lists, verdicts))
    assert "epoch" in control_verdict and "learning_rate" in range_verdict


def test_tuning_reports_and_searches_the_same_on_katib_and_vertex(rendered):
    """Both engines optimise the metric the trainer reports (val_accuracy, maximised, the last report) on a
    validation split, over the trainer's own learning rate, batch size and epochs."""
    experiment = find(rendered["katib"][1], "Experiment")["spec"]
    vertex = yaml.safe_load(HPTUNING_SPEC.read_text())
    assert experiment["objective"]["objectiveMetricName"] == "val_accuracy" and \
        experiment["objective"]["type"] == "maximize"
    assert experiment["objective"]["metricStrategies"] == [{"name": "val_accuracy", "value": "latest"}]
    assert vertex["studySpec"]["metrics"] == [{"metricId": "val_accuracy", "goal": "MAXIMIZE"}]
    assert vertex["studySpec"]["measurementSelectionType"] == "LAST_MEASUREMENT"
    assert experiment["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    # Katib's StdOut collector's default filter finds the trainer's line.
    katib_filter = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
    assert re.findall(katib_filter, "val_accuracy=0.9123")[0][:2] == ("val_accuracy", "0.9123")
    trial = container({"spec": experiment["trialTemplate"]["trialSpec"]["spec"]})
    assert experiment["trialTemplate"]["primaryContainerName"] == trial["name"] == "trainer"
    assert trial["command"] == ["fmnist-train"]  # the collector wraps the command: it must be there
    assert "--validation_split=0.1" in trial["args"]
    assert "--validation_split=0.1" in vertex["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    # Every trial writes its own folder (a finished run in the way would be refused).
    assert "--output_dir=$(OUTPUT_DIR)/${trialParameters.trialName}" in trial["args"]
    assert {"name": "trialName", "description": experiment["trialTemplate"]["trialParameters"][-1]["description"],
            "reference": "${trialSpec.Name}"} in experiment["trialTemplate"]["trialParameters"]
    tuned = {"learningRate": "--learning_rate", "batchSize": "--batch_size", "epochs": "--epochs"}
    assert [p["name"] for p in experiment["parameters"]] == list(tuned)
    for name, flag in tuned.items():
        assert f"{flag}=${{trialParameters.{name}}}" in trial["args"]
    assert [p["parameterId"] for p in vertex["studySpec"]["parameters"]] == [f[2:] for f in tuned.values()]
    assert vertex["parallelTrialCount"] <= vertex["maxTrialCount"]
    # Katib labels the namespace for its metrics collector, or the trials would report nothing.
    namespace = find(rendered["katib"][1], "Namespace")
    assert namespace["metadata"]["labels"]["katib.kubeflow.org/metrics-collector-injection"] == "enabled"


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


def test_an_overlay_on_the_jobset_reaches_its_pods(tmp_path):
    """kustomize does not know a JobSet's insides: an overlay's image and ConfigMap must still reach its pods
    (k8s/overlays/multi-worker/kustomizeconfig.yaml)."""
    folder = tmp_path / "my-multi-worker"
    folder.mkdir()
    base = os.path.relpath(ROOT / "k8s" / "overlays" / "multi-worker", folder)
    (folder / "kustomization.yaml").write_text(f"""
resources: [{base}]
namePrefix: team-a-
images:
  - name: REGION-docker.pkg.dev/PROJECT_ID/fmnist/fmnist-trainer
    newName: example.com/fmnist-trainer
    digest: sha256:{"ab" * 32}
configMapGenerator:
  - name: fmnist-run
    behavior: merge
    literals: [OUTPUT_DIR=gs://my-bucket/mw]
""")
    proc = run([lint_tool("kubectl"), "kustomize", folder])
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    c = container(the_job(docs))
    assert c["image"] == f"example.com/fmnist-trainer@sha256:{'ab' * 32}"
    configmap = find(docs, "ConfigMap")
    assert env_of(c)["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]["name"] == configmap["metadata"]["name"]
    assert configmap["metadata"]["name"].startswith("team-a-fmnist-run-")
    pod = the_job(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"] == "team-a-fmnist-trainer"


def test_multi_worker_jobset_restarts_its_workers_together(rendered):
    docs = rendered["multi-worker"][1]
    assert not [d for d in docs if d["kind"] == "Job"], "the single-pod Job must not be created beside the JobSet"
    jobset = find(docs, "JobSet")
    # One replicated Job of N pods: TF_CONFIG's cluster is that child Job's pods (k8s/tf_config.py).
    [replicated] = jobset["spec"]["replicatedJobs"]
    assert replicated["replicas"] == 1
    job = the_job(docs)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    c = container(job)
    env = env_of(c)
    assert spec["completionMode"] == "Indexed"
    workers = spec["completions"]
    assert workers >= 2 and spec["parallelism"] == workers == int(env["WORKER_COUNT"]["value"])
    # JobSet creates the headless Service (named by the subdomain) and publishes addresses before readiness.
    network = jobset["spec"]["network"]
    assert network == {"enableDNSHostnames": True, "subdomain": env["WORKER_SERVICE"]["value"],
                       "publishNotReadyAddresses": True}
    assert "subdomain" not in pod  # JobSet sets it
    port = int(env["TF_CONFIG_PORT"]["value"])
    assert [p["containerPort"] for p in c["ports"] if p["name"] != "metrics"] == [port]
    assert (env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    assert c["command"] == ["python3", "k8s/tf_config.py", "fmnist-train"]
    # Workers may reach each other's port, and only that.
    labels = job["spec"]["template"]["metadata"]["labels"]
    allow = [d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"].get("ingress")
             and d["metadata"]["name"] != "fmnist-trainer-allow-metrics"]  # Prometheus's: test_monitoring_launch
    assert len(allow) == 1
    assert allow[0]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for rule in allow[0]["spec"]["ingress"] for p in rule["ports"]] == [port]
    # Every pod's host name (<jobset>-<replicatedJob>-<jobIndex>-<podIndex>) is a valid DNS label.
    assert len(f"{jobset['metadata']['name']}-{replicated['name']}-0-{workers - 1}") <= 63
    # The child Job keeps the single-pod Job's limits.
    base = find(rendered["cpu"][1], "Job")
    assert spec["activeDeadlineSeconds"] == base["spec"]["activeDeadlineSeconds"]
    assert jobset["spec"]["ttlSecondsAfterFinished"] == base["spec"]["ttlSecondsAfterFinished"]


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
    """Runs the JobSet's exact container command per pod, with a stand-in trainer that reports what it got; the
    hosts must be the DNS names JobSet documents: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>."""
    from trainer import distribution

    docs = rendered["multi-worker"][1]
    jobset = find(docs, "JobSet")
    job = the_job(docs)
    c = container(job)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "fmnist-train").write_text(
        "#!/bin/sh\nprintf '%s\\n' \"$TF_CONFIG\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    (fake_bin / "fmnist-train").chmod(0o755)
    workers = job["spec"]["completions"]
    replicated = jobset["spec"]["replicatedJobs"][0]["name"]
    subdomain = jobset["spec"]["network"]["subdomain"]
    port = c["ports"][0]["containerPort"]
    expected_hosts = [f"{jobset['metadata']['name']}-{replicated}-0-{i}.{subdomain}:{port}" for i in range(workers)]
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


def test_tf_config_default_template_gives_the_jobset_dns_names():
    # In a JobSet the pod label job-name is the child Job's name, <jobset>-<replicatedJob>-<jobIndex>.
    env = {"JOB_COMPLETION_INDEX": "2", "WORKER_COUNT": "3", "JOB_NAME": "fmnist-multi-worker-worker-0",
           "WORKER_SERVICE": "fmnist-workers"}
    assert tf_config.build_tf_config(env) == {
        "cluster": {"worker": ["fmnist-multi-worker-worker-0-0.fmnist-workers:2222",
                               "fmnist-multi-worker-worker-0-1.fmnist-workers:2222",
                               "fmnist-multi-worker-worker-0-2.fmnist-workers:2222"]},
        "task": {"type": "worker", "index": 2}}
    env["TF_CONFIG_PORT"] = "3000"
    assert tf_config.build_tf_config(env)["cluster"]["worker"][0] == \
        "fmnist-multi-worker-worker-0-0.fmnist-workers:3000"
    # A plain Indexed Job with the same headless-Service setup: <job>-<index>.<service>.
    env = {"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2", "JOB_NAME": "train", "WORKER_SERVICE": "workers"}
    assert tf_config.build_tf_config(env)["cluster"]["worker"] == ["train-0.workers:2222", "train-1.workers:2222"]


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


@pytest.fixture(scope="module")
def hptuning_schema(schema):
    """jobs/hptuningjob.schema.json, its trialJobSpec resolved to jobs/customjobspec.schema.json."""
    with open(ROOT / "jobs" / "hptuningjob.schema.json") as f:
        loaded = json.load(f)
    jsonschema.Draft202012Validator.check_schema(loaded)
    registry = referencing.Registry().with_resources(
        [(s["$id"], referencing.Resource.from_contents(s)) for s in (schema.schema, loaded)])
    return jsonschema.Draft202012Validator(loaded, registry=registry)


PREBUILT_TF = re.compile(r"^(us|europe|asia)-docker\.pkg\.dev/vertex-ai/training/tf-(cpu|gpu)\.2-\d+\.py3\d+:latest$")


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
        if "containerSpec" in pool:
            assert pool["containerSpec"]["imageUri"].endswith("-gpu")
            task = pool["containerSpec"]
        else:
            task = pool["pythonPackageSpec"]
            match = PREBUILT_TF.match(task["executorImageUri"])
            assert match and match.group(2) == "gpu", task["executorImageUri"]  # a GPU machine: the GPU image
            assert task["pythonModule"] == "trainer.task"
            assert [uri.startswith("gs://BUCKET/fmnist/packages/") for uri in task["packageUris"]] == [True]
        assert (pool.get("containerSpec") or pool["pythonPackageSpec"]) == \
            (pools[0].get("containerSpec") or pools[0]["pythonPackageSpec"])
        assert not any(a.startswith("--output_dir") for a in task["args"])  # AIP_MODEL_DIR
    assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://BUCKET/fmnist/")
    scheduling = spec["scheduling"]
    if len(pools) > 1:
        # A replica that restarts alone cannot rejoin the others' collectives: restart them all.
        assert scheduling["restartJobOnWorkerRestart"] is True
    assert scheduling.get("strategy") == ("SPOT" if name.endswith("-spot") else None)
    assert scheduling.get("disableRetries") is not True  # a preempted or crashed replica is retried


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
    (lambda s: s.update(scheduling={"strategy": "PREEMPTIBLE"}), "PREEMPTIBLE"),
    (lambda s: s.update(baseOutputDirectory={"outputUriPrefix": "/local/path"}), "/local/path"),
    (lambda s: s.update(workerPoolSpecs=[{}]), "should be non-empty"),
])
def test_the_schema_rejects_what_vertex_would(schema, mutate, complaint):
    spec = vertex_spec("gpu")
    mutate(spec)
    messages = " | ".join(e.message for e in schema.iter_errors(spec))
    assert complaint in messages


def test_hptuning_spec_matches_the_hyperparameter_tuning_job_schema(hptuning_schema):
    job = yaml.safe_load(HPTUNING_SPEC.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in hptuning_schema.iter_errors(job)]
    assert not errors, errors
    trial = job["trialJobSpec"]
    assert trial["workerPoolSpecs"][0]["containerSpec"] == {
        **vertex_spec("gpu")["workerPoolSpecs"][0]["containerSpec"],
        "args": [*vertex_spec("gpu")["workerPoolSpecs"][0]["containerSpec"]["args"], "--validation_split=0.1"]}
    assert job["maxFailedTrialCount"] < job["maxTrialCount"]
    # The schema rejects what Vertex AI would: a misspelt field in the trial's CustomJobSpec, an output-only
    # field, an unknown enum value, a parameter with two value specs.
    controls = [
        (lambda j: j["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"].update(imageUrl="x"), "imageUrl"),
        (lambda j: j.update(state="JOB_STATE_SUCCEEDED"), "False schema"),
        (lambda j: j["studySpec"]["metrics"][0].update(goal="MAXIMISE"), "MAXIMISE"),
        (lambda j: j["studySpec"]["parameters"][1].update(doubleValueSpec={"minValue": 1, "maxValue": 2}),
         "is valid under each of"),
        (lambda j: j["studySpec"].update(algorithm="BAYESIAN"), "BAYESIAN"),
    ]
    for mutate, complaint in controls:
        broken = copy.deepcopy(job)
        mutate(broken)
        assert complaint in " | ".join(e.message for e in hptuning_schema.iter_errors(broken)), complaint


SDK_CHECK = gcloud_sdk.PRELUDE + r'''
fields = {}
for name in request["messages"]:
    cls = getattr(m, name)
    fields[name] = {f.name: {"repeated": f.repeated, "kind": kind(f)} for f in cls.all_fields()}
parsed = {}
for path in request["specs"]:
    with open(path) as f:
        message = export_util.Import(message_type=m.GoogleCloudAiplatformV1CustomJobSpec, stream=f.read())
    parsed[path] = unrecognized(message)
for path in request["hptuning"]:
    # What `gcloud ai hp-tuning-jobs create --config` does with the file (api_lib/ai/hp_tuning_jobs/client.py).
    try:
        message = messages_util.DictToMessageWithErrorCheck(gyaml.load_path(path),
                                                             m.GoogleCloudAiplatformV1HyperparameterTuningJob)
        parsed[path] = unrecognized(message)
    except Exception as error:
        parsed[path] = [f"{type(error).__name__}: {error}"]
print(json.dumps({"fields": fields, "unrecognized": parsed}))
'''


def test_schemas_and_specs_agree_with_the_google_cloud_sdk(schema, hptuning_schema, tmp_path):
    """Every field of both schemas is the SDK's aiplatform v1 client's, with its type; the specs parse cleanly the
    way gcloud parses them, and a misspelt field does not."""
    root = gcloud_sdk.root()
    if root is None:
        pytest.skip("the Google Cloud SDK (gcloud) is not installed: the schemas are checked on their own")
    python = gcloud_sdk.python(root)
    defs = {**schema.schema["$defs"], **hptuning_schema.schema["$defs"]}
    messages = {d["x-message"]: name for name, d in defs.items() if "x-message" in d}
    specs = [str(ROOT / "jobs" / f"customjob-{name}.yaml") for name in VERTEX_SPECS]
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(HPTUNING_SPEC.read_text().replace("maxTrialCount:", "maxTrialsCount:"))
    hptuning = [str(HPTUNING_SPEC), str(misspelt)]
    result = run([python, "-c", SDK_CHECK, root],
                 input=json.dumps({"messages": list(messages), "specs": specs, "hptuning": hptuning}))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    unrecognized = answer["unrecognized"]
    assert "maxTrialsCount" in " ".join(unrecognized.pop(str(misspelt)))
    assert unrecognized == {path: [] for path in specs + hptuning[:1]}

    def resolve(prop):
        if "$ref" not in prop:
            return prop
        ref = prop["$ref"]
        return defs["CustomJobSpec"] if ref == "customjobspec.schema.json" else defs[ref.split("/")[-1]]

    for message, def_name in messages.items():
        sdk_fields = answer["fields"][message]
        properties = defs[def_name]["properties"]
        assert set(properties) == set(sdk_fields), f"{def_name}: {set(properties) ^ set(sdk_fields)}"
        for field, sdk in sdk_fields.items():
            if properties[field] is False:
                continue  # output only: a config may not set it
            prop = resolve(properties[field])
            if sdk["repeated"]:
                assert prop["type"] == "array", (def_name, field)
                prop = resolve(prop["items"])
            kind = sdk["kind"]
            if isinstance(kind, dict) and kind.get("message") == "LabelsValue":
                assert prop["type"] == "object" and prop["additionalProperties"] == {"type": "string"}
            elif isinstance(kind, dict) and "message" in kind:
                assert prop.get("x-message") == kind["message"], (def_name, field)
            elif isinstance(kind, dict):
                assert sorted(prop["enum"]) == kind["enum"], (def_name, field)
            elif kind == "integer":
                assert prop == defs["int"], (def_name, field)
            elif field in ("timeout", "maxWaitDuration", "maxDuration", "maxDurationNoProgress"):
                assert prop == defs["duration"], (def_name, field)  # google.protobuf.Duration, a string
            else:
                assert prop["type"] == kind, (def_name, field)


# ------------------------------------------------------------------------------------------- scripts


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


def test_submit_vertex_fills_in_the_spec_and_calls_gcloud(tmp_path, schema, hptuning_schema):
    gcloud, log = fake_client(tmp_path / "bin", "gcloud")
    env = {"PATH": os.environ["PATH"], "GCLOUD": str(gcloud), "PROJECT_ID": "my-project", "REGION": "europe-west4",
           "BUCKET": "gs://my-bucket", "DISPLAY_NAME": "fmnist-test", "TMPDIR": str(tmp_path)}
    for name in [n for n in VERTEX_SPECS if n != "python-package"] + ["hptuning"]:
        result = run([ROOT / "jobs" / "submit_vertex.sh", name], env=env)
        assert result.returncode == 0, result.stderr
        args = log.read_text().splitlines()
        if name == "hptuning":
            assert args[:3] == ["ai", "hp-tuning-jobs", "create"]
        else:
            assert args[:3] == ["ai", "custom-jobs", "create"]
        assert {"--project=my-project", "--region=europe-west4", "--display-name=fmnist-test"} <= set(args)
        config = (tmp_path / "bin" / "gcloud.config").read_text()
        spec = yaml.safe_load(config)
        assert not re.search(r"PROJECT_ID|REGION|BUCKET", re.sub(r"(?m)^\s*#.*$", "", config))
        if name == "hptuning":
            assert not list(hptuning_schema.iter_errors(spec))
            spec = spec["trialJobSpec"]
        assert not list(schema.iter_errors(spec))
        assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://my-bucket/fmnist/")
        assert spec["serviceAccount"] == "fmnist-trainer@my-project.iam.gserviceaccount.com"
        for pool in spec["workerPoolSpecs"]:
            assert pool["containerSpec"]["imageUri"] == \
                "europe-west4-docker.pkg.dev/my-project/fmnist/fmnist-trainer:0.1.0-gpu"
        assert not list(tmp_path.glob("fmnist-submit-*")), "the filled-in spec was left behind"

    custom = run([ROOT / "jobs" / "submit_vertex.sh", "gpu"], env={**env, "IMAGE_URI": "example.com/img@sha256:ab"})
    assert custom.returncode == 0
    assert "imageUri: example.com/img@sha256:ab" in (tmp_path / "bin" / "gcloud.config").read_text()
    dry = run([ROOT / "jobs" / "submit_vertex.sh", "gpu", "--dry-run"], env=env)
    assert dry.returncode == 0 and dry.stdout.startswith(f"{gcloud} ai custom-jobs create")
    kept = re.search(r"--config=(\S+)", dry.stdout).group(1)
    assert not list(schema.iter_errors(yaml.safe_load(pathlib.Path(kept).read_text())))
    no_bucket = {k: v for k, v in env.items() if k != "BUCKET"}
    assert run([ROOT / "jobs" / "submit_vertex.sh", "gpu"], env=no_bucket).returncode == 2
    for bad in ("tpu", "../jobs/customjob-gpu"):
        assert run([ROOT / "jobs" / "submit_vertex.sh", bad], env=env).returncode == 2


@pytest.fixture(scope="module")
def storage_emulator(tmp_path_factory):
    """gcp-storage-emulator on 127.0.0.1 with a bucket `launch`; yields STORAGE_EMULATOR_HOST."""
    from conftest import free_ports

    port = free_ports(1)[0]
    log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "w")
    process = subprocess.Popen([MAIN_BIN / "gcp-storage-emulator", "start", "--host=127.0.0.1", f"--port={port}",
                                "--in-memory", "--default-bucket=launch"], stdout=log, stderr=subprocess.STDOUT)
    host = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", host)
            from google.cloud import storage
            deadline = time.time() + 30
            while True:
                try:
                    if storage.Client(project="test").bucket("launch").exists():
                        break
                except Exception:  # not listening yet
                    pass
                assert time.time() < deadline and process.poll() is None, "the storage emulator did not start"
                time.sleep(0.2)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_submit_vertex_builds_and_uploads_the_python_package(tmp_path, schema, storage_emulator, monkeypatch):
    """python-package: `python -m build --sdist` (offline: BUILD_ISOLATION=0), the upload to Cloud Storage (a
    local emulator), the spec's packageUris pointing at it, gcloud (a stand-in) called with it."""
    gcloud, log = fake_client(tmp_path / "bin", "gcloud")
    env = {"PATH": os.environ["PATH"], "GCLOUD": str(gcloud), "PROJECT_ID": "my-project", "BUCKET": "launch",
           "DISPLAY_NAME": "fmnist-pkg", "TMPDIR": str(tmp_path), "PYTHON": sys.executable, "BUILD_ISOLATION": "0",
           "STORAGE_EMULATOR_HOST": storage_emulator}
    result = run([ROOT / "jobs" / "submit_vertex.sh", "python-package"], env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert log.read_text().splitlines()[:3] == ["ai", "custom-jobs", "create"]
    spec = yaml.safe_load((tmp_path / "bin" / "gcloud.config").read_text())
    assert not list(schema.iter_errors(spec))
    [uri] = spec["workerPoolSpecs"][0]["pythonPackageSpec"]["packageUris"]
    assert re.fullmatch(r"gs://launch/fmnist/packages/fmnist[-_]trainer-0\.1\.0\.tar\.gz", uri), uri
    # The object in the bucket is the trainer's source package.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_emulator)
    from google.cloud import storage
    import io
    import tarfile
    data = storage.Client(project="test").bucket("launch").blob(uri[len("gs://launch/"):]).download_as_bytes()
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert any(n.endswith("/trainer/task.py") for n in names) and any(n.endswith("/setup.py") for n in names)
    assert not list(tmp_path.glob("fmnist-submit-*")), "the build folder was left behind"

    # A prebuilt package is uploaded as it is; the helper's errors are one line and status 2.
    package = tmp_path / "fmnist_trainer-9.9.9.tar.gz"
    package.write_bytes(data)
    result = run([ROOT / "jobs" / "submit_vertex.sh", "python-package"], env={**env, "PACKAGE": str(package)})
    assert result.returncode == 0, result.stderr
    uri = yaml.safe_load((tmp_path / "bin" / "gcloud.config").read_text())[
        "workerPoolSpecs"][0]["pythonPackageSpec"]["packageUris"][0]
    assert uri == "gs://launch/fmnist/packages/fmnist_trainer-9.9.9.tar.gz"
    upload = [sys.executable, ROOT / "jobs" / "upload_package.py"]
    for args, message in (([package, "gs://no-such-bucket/p/"], "bucket gs://no-such-bucket does not exist"),
                          ([package, "/local/folder"], "is not a gs://BUCKET[/PATH] prefix"),
                          ([tmp_path / "missing.tar.gz", "gs://launch/p/"], "no package file")):
        result = run([*upload, *args], env=env)
        assert result.returncode == 2 and result.stderr.startswith("upload_package: error: ") and \
            message in result.stderr and "Traceback" not in result.stderr, result.stderr
    dry = run([ROOT / "jobs" / "submit_vertex.sh", "python-package", "--dry-run"], env={**env, "PACKAGE": str(package),
                                                                                        "STORAGE_EMULATOR_HOST": ""})
    assert dry.returncode == 0 and "would upload" in dry.stderr


@pytest.fixture
def fake_vertex_api():
    """A stand-in for Vertex AI's REST API on 127.0.0.1: records each request, answers with the job it was sent."""
    import http.server
    import threading

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            path = self.path.split("?")[0]
            received.append({"path": path, "body": body, "authorization": self.headers.get("Authorization")})
            reply = json.dumps(dict(body, name=f"{path.split('/', 2)[2]}/123", state="JOB_STATE_PENDING")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", received
    server.shutdown()
    server.server_close()


def proto_json(value):
    """`value` with proto3 JSON's int64 strings ("1") made numbers again (the schemas' "int" accepts both)."""
    if isinstance(value, dict):
        return {k: proto_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [proto_json(v) for v in value]
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) else value


def test_submit_vertex_through_the_real_gcloud(tmp_path, schema, hptuning_schema, fake_vertex_api,
                                               storage_emulator):
    """jobs/submit_vertex.sh with the real gcloud CLI (its own flag parsing, config reading and request building),
    sending to a local stand-in for the Vertex AI API (api_endpoint_overrides) with a dummy access token: what
    arrives is exactly what Vertex AI would receive."""
    if gcloud_sdk.root() is None:
        pytest.skip("the Google Cloud SDK (gcloud) is not installed")
    endpoint, received = fake_vertex_api
    token = tmp_path / "token"
    token.write_text("ya29.not-a-real-token\n")
    package = tmp_path / "fmnist_trainer-0.1.0.tar.gz"
    package.write_bytes(b"not really a package")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"), "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
           "CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM": endpoint, "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
           "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "true", "PROJECT_ID": "my-project", "REGION": "europe-west4",
           "BUCKET": "launch", "PACKAGE": str(package), "PYTHON": sys.executable,
           "STORAGE_EMULATOR_HOST": storage_emulator}
    names = ["gpu-spot", "multi-worker", "python-package", "hptuning"]  # gpu: gpu-spot without the strategy
    for name in names:
        result = run([ROOT / "jobs" / "submit_vertex.sh", name], env={**env, "DISPLAY_NAME": f"fmnist-{name}"},
                     timeout=120)
        assert result.returncode == 0, (name, result.stdout[-2000:], result.stderr[-2000:])
    assert len(received) == len(names), [r["path"] for r in received]
    for name, request in zip(names, received):
        assert request["authorization"] == "Bearer ya29.not-a-real-token"
        body = request["body"]
        assert body["displayName"] == f"fmnist-{name}"
        if name == "hptuning":
            assert request["path"] == "/v1/projects/my-project/locations/europe-west4/hyperparameterTuningJobs"
            assert not list(hptuning_schema.iter_errors(body)), name
            assert proto_json(body["studySpec"]) == yaml.safe_load(HPTUNING_SPEC.read_text())["studySpec"]
            assert body["maxTrialCount"] == 12 and body["parallelTrialCount"] == 3
            spec = body["trialJobSpec"]
        else:
            assert request["path"] == "/v1/projects/my-project/locations/europe-west4/customJobs"
            spec = body["jobSpec"]
            assert not list(schema.iter_errors(spec)), name
            assert proto_json(spec["workerPoolSpecs"]) == [
                json.loads(json.dumps(pool).replace("REGION-docker.pkg.dev/PROJECT_ID",
                                                    "europe-west4-docker.pkg.dev/my-project")
                           .replace("gs://BUCKET/fmnist/packages/fmnist_trainer-0.1.0.tar.gz",
                                    "gs://launch/fmnist/packages/fmnist_trainer-0.1.0.tar.gz"))
                for pool in vertex_spec(name)["workerPoolSpecs"]], name
            assert spec["scheduling"] == vertex_spec(name)["scheduling"], name
        assert spec["serviceAccount"] == "fmnist-trainer@my-project.iam.gserviceaccount.com"
        assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://launch/fmnist/")
    # The control: gcloud refuses a misspelt field before sending anything.
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(HPTUNING_SPEC.read_text().replace("maxTrialCount:", "maxTrialsCount:"))
    refused = run(["gcloud", "ai", "hp-tuning-jobs", "create", "--project=my-project", "--region=europe-west4",
                   "--display-name=x", f"--config={misspelt}"], env=env)
    assert refused.returncode != 0 and "maxTrialsCount" in refused.stderr, refused.stderr
    assert len(received) == len(names)


# ---- a tuning trial, as each engine starts it -------------------------------------------------------------------

KATIB_METRIC_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"  # its StdOut collector's default


def test_a_tuning_trial_reports_the_validation_accuracy_each_engine_reads(rendered, prepared_data, tmp_path):
    from conftest import assert_ok, data_flags, read_metrics, run_trainer
    small = ["--train_examples=1000", "--epochs=1", "--batch_size=64", *data_flags()]  # the last value of a flag wins

    # Vertex AI: the trial's args with its parameters appended; AIP_MODEL_DIR and the hypertune file in the env.
    metric_file = tmp_path / "hypertune" / "output.metrics"
    vertex_args = vertex_trials(yaml.safe_load(HPTUNING_SPEC.read_text()))[0]
    result = run_trainer(*vertex_args, *small, env={"AIP_MODEL_DIR": str(tmp_path / "vertex"),
                                                    "CLOUD_ML_TRIAL_ID": "7",
                                                    "CLOUD_ML_HP_METRIC_FILE": str(metric_file)})
    assert_ok(result)
    reported = json.loads(metric_file.read_text().splitlines()[-1])
    assert reported["trial"] == "7"
    assert float(reported["val_accuracy"]) == read_metrics(tmp_path / "vertex")["validation_accuracy"]

    # Katib: the trial's container args with the parameters substituted; the collector parses stdout.
    katib_args = [arg.replace("$(OUTPUT_DIR)", str(tmp_path / "katib"))
                  for arg in katib_trials(find(rendered["katib"][1], "Experiment"))[0]]
    result = run_trainer(*katib_args, *small)
    assert_ok(result)
    values = [float(match.group(2)) for line in result.stdout.splitlines()
              for match in re.finditer(KATIB_METRIC_FILTER, line) if match.group(1) == "val_accuracy"]
    trial_dir = tmp_path / "katib" / "fmnist-tuning-abc123"
    assert values and values[-1] == read_metrics(trial_dir)["validation_accuracy"]
