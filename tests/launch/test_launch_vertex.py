"""Vertex AI custom jobs (jobs/), checked without a cloud: the specs validate against jobs/customjobspec.schema.json
and jobs/hptuningjob.schema.json (closed objects, API types), which are compared field by field with the Google
Cloud SDK's aiplatform v1 client when the SDK is installed (submitting them: test_launch_vertex_submit.py)."""

import copy
import json
import re

import pytest
import yaml

from support import gcloud_sdk
from support.data import ROOT
from support.launch import HPTUNING_SPEC, VERTEX_SPECS, run, vertex_spec

# The launchers' checks run the checkers and launchers as processes, or read what kubectl rendered: the end-to-end
# layer (`make test`).
pytestmark = pytest.mark.e2e


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
