"""What the launchers declare for watching runs, checked without a cluster or a cloud: the metrics port and its
scrape in every Kubernetes pod (k8s/base), the one ingress the network policy opens for it, Katib's early
stopping (the median rule) validated against Katib's published API model and its medianstop service's rules, and
Vertex AI's automated stopping in jobs/hptuning-gpu.yaml against its schema."""

import copy
import json
import re

import jsonschema
import pytest
import referencing
import yaml

from support.data import ROOT
from support.launch import find, lint_tool, run

pytestmark = pytest.mark.e2e  # kubectl renders the manifests, as in test_launch_kubernetes.py

KUSTOMIZATIONS = {"base": "k8s/base", "cpu": "k8s/overlays/cpu", "gpu": "k8s/overlays/gpu",
                  "multi-worker": "k8s/overlays/multi-worker", "katib": "k8s/katib"}
HPTUNING_SPEC = ROOT / "jobs" / "hptuning-gpu.yaml"


@pytest.fixture(scope="module")
def rendered():
    kubectl = lint_tool("kubectl")
    result = {}
    for name, folder in KUSTOMIZATIONS.items():
        proc = run([kubectl, "kustomize", folder])
        assert proc.returncode == 0, f"kubectl kustomize {folder} failed:\n{proc.stderr}"
        result[name] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return result


def pod_templates(docs):
    """The training pod templates of one rendering: the Job's, the JobSet's child Job's, the Katib trial's."""
    for doc in docs:
        if doc["kind"] == "Job":
            yield doc["spec"]["template"]
        elif doc["kind"] == "JobSet":
            for replicated in doc["spec"]["replicatedJobs"]:
                yield replicated["template"]["spec"]["template"]
        elif doc["kind"] == "Experiment":
            yield doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]


def test_every_training_pod_serves_its_metrics_port_and_asks_to_be_scraped(rendered):
    for name, docs in rendered.items():
        [template] = list(pod_templates(docs))
        [trainer] = template["spec"]["containers"]
        ports = {p["name"]: p for p in trainer["ports"]}
        assert ports["metrics"]["protocol"] == "TCP", name
        port = ports["metrics"]["containerPort"]
        assert f"--metrics_port={port}" in trainer["args"], name  # the trainer serves where the pod says
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_the_network_policy_lets_only_prometheus_reach_only_the_metrics_port(rendered):
    for name, docs in rendered.items():
        [template] = list(pod_templates(docs))
        labels = template["metadata"]["labels"]
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        allow = find(docs, "NetworkPolicy", "fmnist-trainer-allow-metrics")
        assert allow["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), name
        [rule] = allow["spec"]["ingress"]
        assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]  # the container port's name
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}]
        # Every other policy that admits traffic is the workers' own (the multi-worker overlay).
        others = [p for p in policies if p["spec"].get("ingress") and p is not allow]
        assert all(p["metadata"]["name"] == "fmnist-workers-allow-peers" for p in others), name


# ---- Katib: the median stopping rule ----------------------------------------------------------------------------

def medianstop_problems(spec):
    """What Katib would refuse in an Experiment's early stopping, by the rules of its medianstop service
    (pkg/earlystopping/v1beta1/medianstop/service.py: validate_medianstop_setting) and its metrics collector
    (early stopping reads the StdOut or File collector only), plus this job's own: a trial must reach start_step."""
    problems = []
    early = spec.get("earlyStopping") or {}
    if early.get("algorithmName") != "medianstop":
        problems.append(f"algorithm {early.get('algorithmName')!r} is not medianstop")
    for setting in early.get("algorithmSettings", []):
        try:
            value = int(setting["value"])
        except (TypeError, ValueError):
            problems.append(f"{setting['name']}: {setting['value']!r} is not a whole number")
            continue
        if setting["name"] == "min_trials_required" and value <= 0:
            problems.append("min_trials_required must be greater than zero (>0)")
        elif setting["name"] == "start_step" and value < 1:
            problems.append("start_step must be greater or equal than one (>=1)")
        elif setting["name"] not in ("min_trials_required", "start_step"):
            problems.append(f"unknown setting {setting['name']} for algorithm medianstop")
    if spec["metricsCollectorSpec"]["collector"]["kind"] not in ("StdOut", "File"):
        problems.append("early stopping works only with the StdOut or File metrics collector")
    start_step = next((int(s["value"]) for s in early.get("algorithmSettings", []) if s["name"] == "start_step"), 4)
    epochs = next(p for p in spec["parameters"] if p["name"] == "epochs")["feasibleSpace"]
    if start_step > int(epochs["min"]):
        problems.append(f"start_step {start_step} is more reports than a {epochs['min']}-epoch trial makes")
    return problems


def test_katib_stops_lagging_trials_with_the_median_rule(rendered):
    from kubeflow_katib_api.models.v1beta1_experiment import V1beta1Experiment
    experiment = find(rendered["katib"], "Experiment")
    spec = experiment["spec"]
    assert medianstop_problems(spec) == []
    # Katib's published model takes it as it is: nothing dropped or renamed on the way in.
    parsed = V1beta1Experiment.from_dict(experiment)
    assert parsed.spec.early_stopping.to_dict() == spec["earlyStopping"]
    # The rule compares the objective the trials report every epoch.
    assert spec["objective"]["objectiveMetricName"] == "val_accuracy"
    # Controls: what Katib refuses is refused here.
    for mutate, complaint in [
        (lambda s: s["earlyStopping"]["algorithmSettings"][1].update(value="0"), "start_step must be"),
        (lambda s: s["earlyStopping"]["algorithmSettings"][0].update(value="0"), "greater than zero"),
        (lambda s: s["earlyStopping"]["algorithmSettings"].append({"name": "start_steps", "value": "2"}),
         "unknown setting start_steps"),
        (lambda s: s["metricsCollectorSpec"]["collector"].update(kind="TensorFlowEvent"), "StdOut or File"),
        (lambda s: s["earlyStopping"]["algorithmSettings"][1].update(value="5"), "more reports than"),
    ]:
        broken = copy.deepcopy(spec)
        mutate(broken)
        assert complaint in " | ".join(medianstop_problems(broken)), complaint
    misspelt = copy.deepcopy(experiment)
    misspelt["spec"]["earlyStopping"]["algorithmSetting"] = misspelt["spec"]["earlyStopping"].pop("algorithmSettings")
    assert V1beta1Experiment.from_dict(misspelt).spec.early_stopping.to_dict() != misspelt["spec"]["earlyStopping"]


# ---- Vertex AI: automated stopping ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hptuning_schema():
    with open(ROOT / "jobs" / "customjobspec.schema.json") as f:
        custom = json.load(f)
    with open(ROOT / "jobs" / "hptuningjob.schema.json") as f:
        loaded = json.load(f)
    registry = referencing.Registry().with_resources(
        [(s["$id"], referencing.Resource.from_contents(s)) for s in (custom, loaded)])
    return jsonschema.Draft202012Validator(loaded, registry=registry)


def test_vertex_ai_stops_lagging_trials_with_its_median_rule(hptuning_schema):
    job = yaml.safe_load(HPTUNING_SPEC.read_text())
    study = job["studySpec"]
    assert study["medianAutomatedStoppingSpec"] == {"useElapsedDuration": False}  # by step: the trainer's epochs
    assert study["measurementSelectionType"] == "LAST_MEASUREMENT"  # the kept weights' value, reported last
    assert not list(hptuning_schema.iter_errors(job))
    # The stopping rules are a oneof: a second one is refused, as Vertex AI would.
    broken = copy.deepcopy(job)
    broken["studySpec"]["decayCurveStoppingSpec"] = {"useElapsedDuration": False}
    assert list(hptuning_schema.iter_errors(broken))
    broken = copy.deepcopy(job)
    broken["studySpec"]["medianAutomatedStoppingSpec"]["useElapsedDurations"] = True
    assert re.search("useElapsedDurations", " | ".join(e.message for e in hptuning_schema.iter_errors(broken)))
