"""The Kubernetes Job (k8s/base, k8s/overlays), checked without a cluster: every kustomization renders (kubectl's
kustomize); the core kinds pass kubernetes-validate --strict; checkov reports no failed check; the pods match the
image; every Job's podFailurePolicy (and the JobSet's failurePolicy) acts on the trainer's exit codes as the contract
says; output goes to Cloud Storage through Workload Identity; every trainer flag in a manifest or a Vertex AI spec
is one the trainer accepts; the overlays and the documented deployment overlay pick what they say."""

import copy
import re

import pytest
import yaml

from support.data import ROOT
from support.launch import (CUSTOM_KINDS, HPTUNING_SPEC, KUBERNETES_VERSIONS, MAIN_BIN, VERTEX_SPECS, checkov,
                            container, dockerfile_env, dockerfile_text, env_of, find, flag_verdicts, katib_trials,
                            run, the_job, vertex_spec, vertex_trials, workloads)
from trainer import errors

# The launchers' checks run the checkers and launchers as processes, or read what kubectl rendered: the end-to-end
# layer (`make test`).
pytestmark = pytest.mark.e2e


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


# The only checkov findings suppressed in place, each with its reason next to it.
EXPECTED_SKIPS = {"CKV_K8S_43", "CKV_DOCKER_2"}


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
    reports = checkov(files, frameworks=("kubernetes", "dockerfile"))
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
        for m in c["volumeMounts"]:  # scratch space, or a Secret read only (the meeting's, multi-worker)
            assert "emptyDir" in volumes[m["name"]] or ("secret" in volumes[m["name"]] and m["readOnly"]), m
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
    contract = [(errors.PERMANENT, False), (errors.RETRY, False), (errors.CRASHED, False), (137, False), (143, True),
                (errors.RETRY, True)]
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
        # No credentials: the one Secret a pod may mount is the meeting's (multi-worker), which opens nothing.
        assert not [v for v in pod["volumes"] if "projected" in v
                    or v.get("secret", {}).get("secretName", "fmnist-cluster-secret") != "fmnist-cluster-secret"], name
        c = container(job)
        env = env_of(c)
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
        assert [a for a in c["args"] if a.startswith("--output_dir=$(OUTPUT_DIR)")], name
        ref = env["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]
        configmap = find(docs, "ConfigMap", ref["name"])  # the generated name, hash suffix included
        assert configmap["data"][ref["key"]].startswith("gs://"), name


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
        "fmnist-train", "trainer.commands.train", [*argument_lists, control, out_of_range])
    assert verdicts == ["ok"] * len(argument_lists), list(zip(argument_lists, verdicts))
    assert "epoch" in control_verdict and "learning_rate" in range_verdict


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
