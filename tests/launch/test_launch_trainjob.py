"""The Kubeflow Trainer v2 TrainJobs and their ClusterTrainingRuntimes (k8s/trainjob), checked without a cluster:
they match the Trainer API's published models (kubeflow-trainer-api; an unknown field is an error) and the CRDs'
OpenAPI schemas of the tagged release vendored in k8s/trainjob/crds; the JobSet Trainer makes of a TrainJob (its
PlainML and TrainJobStatus plugins simulated) passes kubernetes-validate --strict and checkov; every node restarts
together and exit 2 fails the TrainJob, as in the multi-worker JobSet; each pod's container command gives it the
right TF_CONFIG."""

import copy
import functools
import gzip
import hashlib
import os
import re

import jsonschema
import pytest
import yaml

from support.data import ROOT
from support.launch import (KUBERNETES_VERSIONS, MAIN_BIN, checkov, container, env_of, fake_trainer, find,
                            flag_verdicts, lint_tool, resolved_environment, run, team_overlay,
                            tf_configs_of_pods)
from test_launch_jobset import model_errors
from test_launch_kubernetes import jobset_action, pod_failure_action
from trainer.training import distribution
from trainer import errors

pytestmark = pytest.mark.e2e

TRAINJOBS = ("base", "gpu", "multi-node", "multi-node-gpu")
CRDS = ROOT / "k8s" / "trainjob" / "crds"
ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"
STATUS_MOUNT = "/var/run/secrets/kubeflow/trainer"


@pytest.fixture(scope="module")
def trainjobs():
    """{name: docs} of k8s/trainjob/runtime and each TrainJob kustomization, rendered by kubectl."""
    result = {}
    for name in ("runtime", *TRAINJOBS):
        proc = run([lint_tool("kubectl"), "kustomize", ROOT / "k8s" / "trainjob" / name])
        assert proc.returncode == 0, f"k8s/trainjob/{name}:\n{proc.stderr}"
        result[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return result


def runtime_of(rendered, trainjob):
    return find(rendered["runtime"], "ClusterTrainingRuntime", trainjob["spec"]["runtimeRef"]["name"])


def upsert(items, new, key="name"):
    names = {item[key]: i for i, item in enumerate(items)}
    for item in new:
        if item[key] in names:
            items[names[item[key]]] = item
        else:
            items.append(item)


def trainer_jobset(runtime, trainjob):
    """The JobSet Kubeflow Trainer v2.3 builds from `trainjob` on `runtime`: named after the TrainJob; the
    trainer step's replicated Job gets numNodes pods (PlainML), the TrainJob's image, command, args and
    resourcesPerNode (the jobset plugin) and its env merged into container `node`; every trainer container gets
    the status server's env and projected token volume (TrainJobStatus, pkg/runtime/framework/plugins)."""
    meta, trainer = trainjob["metadata"], trainjob["spec"].get("trainer", {})
    spec = copy.deepcopy(runtime["spec"]["template"]["spec"])
    nodes = trainer.get("numNodes", runtime["spec"]["mlPolicy"].get("numNodes", 1))
    for replicated in spec["replicatedJobs"]:
        if replicated["template"]["metadata"]["labels"].get(ANCESTOR) != "trainer":
            continue
        job = replicated["template"]["spec"]
        job["parallelism"] = job["completions"] = nodes
        pod = job["template"]["spec"]
        for c in pod["containers"]:
            for field, key in (("image", "image"), ("command", "command"), ("args", "args"),
                               ("resources", "resourcesPerNode")):
                if key in trainer:
                    c[field] = copy.deepcopy(trainer[key])
            if c["name"] == "node":
                upsert(c.setdefault("env", []), copy.deepcopy(trainer.get("env", [])))
            url = (f"https://kubeflow-trainer-controller-manager.kubeflow-system.svc:10443/apis/trainer.kubeflow.org"
                   f"/v1alpha1/namespaces/{meta['namespace']}/trainjobs/{meta['name']}/status")
            upsert(c["env"], [{"name": "KUBEFLOW_TRAINER_SERVER_URL", "value": url},
                              {"name": "KUBEFLOW_TRAINER_SERVER_CA_CERT", "value": f"{STATUS_MOUNT}/ca.crt"},
                              {"name": "KUBEFLOW_TRAINER_SERVER_TOKEN", "value": f"{STATUS_MOUNT}/token"}])
            upsert(c.setdefault("volumeMounts", []), [{"name": "kubeflow-trainer-token", "mountPath": STATUS_MOUNT,
                                                       "readOnly": True}])
        audience = f"trainer.kubeflow.org/v1alpha1/namespaces/{meta['namespace']}/trainjobs/{meta['name']}/status"
        upsert(pod.setdefault("volumes", []), [{"name": "kubeflow-trainer-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": audience, "expirationSeconds": 3600, "path": "token"}},
            {"configMap": {"name": f"{meta['name']}-tls-config", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}])
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "annotations": runtime["metadata"].get("annotations", {})},  # checkov's reasons
            "spec": spec}


def child_job(jobset):
    """The node Job JobSet creates: <jobset>-node-0, its pods labelled as JobSet and the Job controller label them."""
    [replicated] = jobset["spec"]["replicatedJobs"]
    name = f"{jobset['metadata']['name']}-{replicated['name']}-0"
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": jobset["metadata"]["namespace"],
                        "annotations": jobset["metadata"]["annotations"]},
           "spec": copy.deepcopy(replicated["template"]["spec"])}
    job["spec"]["template"]["metadata"]["labels"].update(
        {"job-name": name, "jobset.sigs.k8s.io/jobset-name": jobset["metadata"]["name"]})
    return job


def built(trainjobs, name):
    trainjob = find(trainjobs[name], "TrainJob")
    jobset = trainer_jobset(runtime_of(trainjobs, trainjob), trainjob)
    return trainjob, jobset, child_job(jobset)


# ---- the Trainer API: published models and the release's CRD schemas -----------------------------------------------

def strict(schema):
    """A CRD's structural schema as a JSON schema that rejects unknown fields (kubectl's strict field validation)
    and knows int-or-string."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: ({p: strict(s) for p, s in v.items()} if k == "properties" else strict(v))
           for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def crd(kind):
    """(the vendored CRD document, its git blob id) for `kind`."""
    raw = gzip.decompress((CRDS / f"trainer.kubeflow.org_{kind.lower()}s.yaml.gz").read_bytes())
    blob = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
    return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), blob


@functools.lru_cache(maxsize=None)
def crd_validator(kind):
    doc, _ = crd(kind)
    [version] = [v for v in doc["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(kind, doc):
    errors_ = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(kind).iter_errors(doc)]
    name = doc["metadata"]["name"]  # the CRD's own CEL rules on the name (TrainJob: it names the pods)
    if kind == "TrainJob" and not (re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63):
        errors_.append("metadata.name must be an RFC 1035 label of at most 63 characters")
    return errors_


def test_vendored_crds_are_the_tagged_release():
    readme = (CRDS / "README.md").read_text()
    assert "v2.3.0" in readme
    for kind in ("TrainJob", "ClusterTrainingRuntime"):
        doc, blob = crd(kind)
        assert re.search(rf"`trainer\.kubeflow\.org_{kind.lower()}s\.yaml\.gz` \|.*\| {blob} \|", readme), kind
        assert doc["spec"]["names"]["kind"] == kind and doc["spec"]["group"] == "trainer.kubeflow.org"
    # The API models are the same release's (requirements-test.txt pins kubeflow-trainer-api).
    assert "kubeflow-trainer-api==2.3.0" in (ROOT / "requirements-test.txt").read_text()


def test_trainjobs_and_runtimes_match_the_trainer_api(trainjobs):
    from kubeflow_trainer_api.models.trainer_v1alpha1_cluster_training_runtime import (
        TrainerV1alpha1ClusterTrainingRuntime)
    from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob
    models = {"TrainJob": TrainerV1alpha1TrainJob, "ClusterTrainingRuntime": TrainerV1alpha1ClusterTrainingRuntime}
    runtimes = [d for d in trainjobs["runtime"] if d["kind"] == "ClusterTrainingRuntime"]
    assert [d["metadata"]["name"] for d in trainjobs["runtime"]] == ["fmnist-tensorflow", "fmnist-tensorflow-gpu"]
    documents = runtimes + [find(trainjobs[name], "TrainJob") for name in TRAINJOBS]
    for doc in documents:
        assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
        assert model_errors(models[doc["kind"]], doc) == [], doc["metadata"]["name"]
        assert crd_errors(doc["kind"], doc) == [], doc["metadata"]["name"]
    for runtime in runtimes:  # cluster-scoped; PlainML: no framework policy
        assert "namespace" not in runtime["metadata"]
        assert set(runtime["spec"]["mlPolicy"]) == {"numNodes"}
        [replicated] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
        assert replicated["name"] == "node" and replicated["template"]["metadata"]["labels"][ANCESTOR] == "trainer"
        assert [c["name"] for c in replicated["template"]["spec"]["template"]["spec"]["containers"]] == ["node"]
    # Both reject what they should: an unknown field deep in the runtime's pod, a wrong type, a bad name.
    broken = copy.deepcopy(runtimes[0])
    broken["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"][0]["imagePullPolcy"] = "Always"
    mistyped = copy.deepcopy(find(trainjobs["multi-node"], "TrainJob"))
    mistyped["spec"]["trainer"]["numNodes"] = "2"
    misnamed = copy.deepcopy(find(trainjobs["base"], "TrainJob"))
    misnamed["metadata"]["name"] = "Fmnist_Train"
    unknown = copy.deepcopy(find(trainjobs["base"], "TrainJob"))
    unknown["spec"]["trainer"]["nodes"] = 2
    assert "containers[0]/imagePullPolcy" in " ".join(model_errors(models["ClusterTrainingRuntime"], broken))
    assert "imagePullPolcy" in " ".join(crd_errors("ClusterTrainingRuntime", broken))
    assert "valid integer" in " ".join(model_errors(models["TrainJob"], mistyped))
    assert "is not of type 'integer'" in " ".join(crd_errors("TrainJob", mistyped))
    assert "RFC 1035" in " ".join(crd_errors("TrainJob", misnamed))
    assert "unknown field /spec/trainer/nodes" in model_errors(models["TrainJob"], unknown)
    assert "'nodes' was unexpected" in " ".join(crd_errors("TrainJob", unknown))


def test_the_nodes_pods_are_valid_kubernetes_and_pass_checkov(trainjobs, tmp_path):
    """The child Jobs Trainer would create (the TrainJobStatus volume included) and the namespaced resources."""
    files = []
    for name in TRAINJOBS:
        _, _, job = built(trainjobs, name)
        core = [d for d in trainjobs[name] if d["kind"] != "TrainJob"] + [job]
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump_all(core))
    for version in KUBERNETES_VERSIONS:
        result = run([MAIN_BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, *files])
        assert result.returncode == 0, f"Kubernetes {version}:\n{result.stdout}{result.stderr}"
    reports = checkov(files)
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    skipped = {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}
    passed = {c["check_id"] for r in reports for c in r["results"]["passed_checks"]}
    assert not failed, "\n".join(f"{c['check_id']} {c['check_name']} in {c['file_path']}" for c in failed)
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_11", "CKV_K8S_13"} <= passed
    assert skipped == {"CKV_K8S_43"}  # the digest: the runtime's annotation says why


def test_a_trainjob_node_runs_the_jobsets_pod(trainjobs):
    """The same image, flags, metrics port and scrape, hardening and scratch volumes as the multi-worker JobSet,
    plus the meeting secret, read-only, and the status server's variables."""
    proc = run([lint_tool("kubectl"), "kustomize", ROOT / "k8s" / "overlays" / "multi-worker"])
    jobset_docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    reference = find(jobset_docs, "JobSet")["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    ref_c = reference["spec"]["containers"][0]
    for name in TRAINJOBS:
        trainjob, jobset, job = built(trainjobs, name)
        template, pod, c = job["spec"]["template"], job["spec"]["template"]["spec"], container(job)
        assert c["args"] == ref_c["args"] == trainjob["spec"]["trainer"]["args"], name
        assert c["image"].rsplit(":", 1)[0] == ref_c["image"].rsplit(":", 1)[0]
        assert c["image"].endswith("-gpu" if "gpu" in name else "-cpu"), name
        assert ("nvidia.com/gpu" in c["resources"]["limits"]) == ("gpu" in name), name
        assert template["metadata"]["annotations"] == reference["metadata"]["annotations"]
        assert c["securityContext"] == ref_c["securityContext"] and pod["securityContext"] == reference["spec"][
            "securityContext"]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            p["name"]: p["containerPort"] for p in ref_c["ports"]}
        assert pod["serviceAccountName"] == find(trainjobs[name], "ServiceAccount")["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False  # the status token is its own projected volume
        env = env_of(c)
        secret_file = env["FMNIST_CLUSTER_SECRET_FILE"]["value"]
        assert secret_file == "/var/run/secrets/fmnist-cluster/secret"
        [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(secret_file)]
        assert mount["readOnly"] is True
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "fmnist-cluster-secret"
        assert volume["secret"]["items"] == [{"key": "secret", "path": "secret"}]
        assert env["KUBEFLOW_TRAINER_SERVER_URL"]["value"].endswith(
            f"/namespaces/fmnist/trainjobs/{trainjob['metadata']['name']}/status")
        # The output location is the namespace's ConfigMap, through the TrainJob's env.
        ref = env["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]
        assert find(trainjobs[name], "ConfigMap", ref["name"])["data"]["OUTPUT_DIR"].startswith("gs://BUCKET/")
        # The nodes' port is open to the other nodes only.
        [allow] = [d for d in trainjobs[name] if d["kind"] == "NetworkPolicy"
                   and d["metadata"]["name"] == "fmnist-trainjob-allow-peers"]
        assert allow["spec"]["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert [p["port"] for r in allow["spec"]["ingress"] for p in r["ports"]] == [int(env["TF_CONFIG_PORT"][
            "value"])]
        assert len(f"{jobset['metadata']['name']}-node-0-{job['spec']['completions'] - 1}") <= 63


def test_exit_codes_fail_or_restart_every_node_as_the_jobset_does(trainjobs):
    contract = [(errors.PERMANENT, False), (errors.RETRY, False), (errors.CRASHED, False), (137, False), (143, True),
                (errors.RETRY, True)]
    for name in TRAINJOBS:
        _, jobset, job = built(trainjobs, name)
        assert job["spec"]["backoffLimit"] == 0 and job["spec"]["podReplacementPolicy"] == "Failed"
        # The rules name the container Trainer calls `node`; the shared simulator speaks of `trainer`.
        for rule in job["spec"]["podFailurePolicy"]["rules"]:
            if "onExitCodes" in rule:
                assert rule["onExitCodes"]["containerName"] == container(job)["name"] == "node"
                rule["onExitCodes"]["containerName"] = "trainer"
        verdicts = []
        for code, disrupted in contract:
            action, message = pod_failure_action(job, code, disrupted)
            reason = "PodFailurePolicy" if action == "FailJob" else "BackoffLimitExceeded"
            verdicts.append(jobset_action(jobset, reason, message and message.replace("trainer", "node", 1)))
        assert verdicts == ["FailJobSet", "RestartJobSet", "RestartJobSet", "RestartJobSet",
                            "RestartJobSetAndIgnoreMaxRestarts", "RestartJobSetAndIgnoreMaxRestarts"], name
        assert jobset_action(jobset, "DeadlineExceeded", "Job was active longer than specified deadline") == \
            "FailJobSet"
        policy = jobset["spec"]["failurePolicy"]
        assert 1 <= policy["maxRestarts"] <= 6 and policy["restartStrategy"] == "BlockingRecreate"


def pod_environment(job, index):
    """The environment Kubernetes gives pod `index` of the child Job (fieldRefs resolved; ConfigMaps as gs://)."""
    labels = job["spec"]["template"]["metadata"]["labels"]
    fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
              **{f"metadata.labels['{k}']": v for k, v in labels.items()}}
    return resolved_environment(job, fields, other="gs://bucket/run")


@pytest.mark.parametrize("name", ["base", "multi-node-gpu"])
def test_each_node_gets_its_tf_config_from_what_the_runtime_gives_it(trainjobs, tmp_path, name):
    """Runs the node's exact container command per pod, with a stand-in trainer that prints what it got: the hosts
    are JobSet's DNS names for the TrainJob's pods, <trainjob>-node-0-<k>.<trainjob>, node 0 the one chief."""
    trainjob, jobset, job = built(trainjobs, name)
    c = container(job)
    fake_bin = fake_trainer(tmp_path / "bin")
    nodes = trainjob["spec"]["trainer"]["numNodes"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes == int(env_of(c)["WORKER_COUNT"]["value"])
    assert job["spec"]["completionMode"] == "Indexed" and jobset["spec"]["network"]["enableDNSHostnames"] is True
    assert "subdomain" not in jobset["spec"]["network"]  # JobSet's default: the JobSet's (the TrainJob's) name
    tj = trainjob["metadata"]["name"]
    expected = [f"{tj}-node-0-{k}.{tj}:2222" for k in range(nodes)]
    chiefs = 0
    for index, config in enumerate(tf_configs_of_pods(c, lambda i: pod_environment(job, i), fake_bin, nodes)):
        assert config == {"cluster": {"worker": expected}, "task": {"type": "worker", "index": index}}
        assert distribution.resolve("auto", config, num_gpus=0) == (
            "multi_worker_mirrored" if nodes > 1 else distribution.resolve("auto", {}, num_gpus=0))
        chiefs += distribution.is_chief(config)
    assert chiefs == 1


def test_the_trainjobs_flags_are_real_and_an_overlay_reaches_them(trainjobs, tmp_path):
    args = [[a.replace("$(OUTPUT_DIR)", "gs://bucket/run") for a in find(trainjobs[n], "TrainJob")["spec"]["trainer"][
        "args"]] for n in TRAINJOBS]
    assert flag_verdicts("fmnist-train", "trainer.commands.train", [*args, ["--epoch=3"]])[:-1] == ["ok"] * len(args)
    docs = team_overlay(tmp_path / "team", ROOT / "k8s" / "trainjob" / "multi-node", "gs://my-bucket/tj")
    trainjob = find(docs, "TrainJob")
    assert trainjob["spec"]["trainer"]["image"] == f"example.com/fmnist-trainer@sha256:{'ab' * 32}"
    ref = env_of(trainjob["spec"]["trainer"])["OUTPUT_DIR"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == find(docs, "ConfigMap")["metadata"]["name"] and ref["name"].startswith("team-a-fmnist-run-")
    assert trainjob["metadata"]["name"] == "team-a-fmnist-multi-node"


def test_tf_config_needs_the_jobset_name_where_the_template_uses_it():
    from k8s import tf_config
    env = {"JOB_COMPLETION_INDEX": "0", "WORKER_COUNT": "2",
           "WORKER_HOST_TEMPLATE": "{jobset}-node-0-{index}.{jobset}:1"}
    with pytest.raises(tf_config.ConfigError, match=re.escape("JOBSET_NAME is not set")):
        tf_config.build_tf_config(env)
    assert tf_config.build_tf_config({**env, "JOBSET_NAME": "tj"})["cluster"]["worker"] == [
        "tj-node-0-0.tj:1", "tj-node-0-1.tj:1"]
