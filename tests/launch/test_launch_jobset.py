"""The multi-worker JobSet (k8s/overlays/multi-worker) and k8s/tf_config.py, its pods' launcher, checked without a
cluster: the JobSet and the Katib Experiment match their projects' published API models (kubeflow-trainer-api,
kubeflow-katib-api; an unknown field is an error), an overlay reaches the JobSet's pods, the workers restart
together, and the container command gives every pod the right TF_CONFIG (and fails in one line without it)."""

import copy
import os
import re
import sys
import typing

import pydantic
import pytest

from k8s import tf_config  # the multi-worker pods' launcher
from support.data import ROOT
from support.launch import (container, env_of, fake_trainer, find, resolved_environment, run, team_overlay, the_job,
                            tf_configs_of_pods)

# The launchers' checks run the checkers and launchers as processes, or read what kubectl rendered: the end-to-end
# layer (`make test`).
pytestmark = pytest.mark.e2e


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


def test_an_overlay_on_the_jobset_reaches_its_pods(tmp_path):
    """kustomize does not know a JobSet's insides: an overlay's image and ConfigMap must still reach its pods
    (k8s/overlays/multi-worker/kustomizeconfig.yaml)."""
    docs = team_overlay(tmp_path / "my-multi-worker", ROOT / "k8s" / "overlays" / "multi-worker", "gs://my-bucket/mw")
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


def test_multi_worker_pods_prove_the_jobs_secret_from_a_read_only_secret_volume(rendered):
    """The meeting's secret (trainer/resilience/meeting.py): the Secret fmnist-cluster-secret, key `secret`,
    mounted read-only where FMNIST_CLUSTER_SECRET_FILE points, never an env value in the manifest."""
    from trainer.resilience import meeting
    job = the_job(rendered["multi-worker"][1])
    c, pod = container(job), job["spec"]["template"]["spec"]
    path = env_of(c)[meeting.SECRET_FILE_ENV]["value"]
    assert path == "/var/run/secrets/fmnist-cluster/secret" and meeting.SECRET_ENV not in env_of(c)
    [mount] = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "fmnist-cluster-secret" and not volume["secret"].get("optional")
    assert volume["secret"]["items"] == [{"key": "secret", "path": "secret"}]
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # not readable by others


def pod_environment(job, index):
    """The environment Kubernetes gives pod `index` of the rendered Indexed Job (fieldRefs resolved)."""
    fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
              "metadata.labels['job-name']": job["metadata"]["name"], "metadata.uid": f"uid-of-pod-{index}"}
    return resolved_environment(job, fields)


def test_multi_worker_container_command_gives_each_pod_its_tf_config(rendered, tmp_path):
    """Runs the JobSet's exact container command per pod, with a stand-in trainer that reports what it got; the
    hosts must be the DNS names JobSet documents: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>."""
    from trainer.training import distribution

    docs = rendered["multi-worker"][1]
    jobset = find(docs, "JobSet")
    job = the_job(docs)
    c = container(job)
    fake_bin = fake_trainer(tmp_path / "bin")
    workers = job["spec"]["completions"]
    replicated = jobset["spec"]["replicatedJobs"][0]["name"]
    subdomain = jobset["spec"]["network"]["subdomain"]
    port = c["ports"][0]["containerPort"]
    expected_hosts = [f"{jobset['metadata']['name']}-{replicated}-0-{i}.{subdomain}:{port}" for i in range(workers)]
    chiefs = 0
    for index, config in enumerate(tf_configs_of_pods(c, lambda i: pod_environment(job, i), fake_bin, workers)):
        assert config == {"cluster": {"worker": expected_hosts}, "task": {"type": "worker", "index": index}}
        assert distribution.cluster_size(config) == workers
        assert distribution.resolve("auto", config, num_gpus=0) == "multi_worker_mirrored"
        chiefs += distribution.is_chief(config)
    assert chiefs == 1


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
