"""Deploying a trained model, checked without a cluster or a cloud: k8s/predict/, jobs/batch-prediction.yaml,
jobs/model_endpoint.sh, and a TensorFlow Serving REST request decoded as TensorFlow Serving documents it.

- k8s/predict/ renders (kubectl's kustomize), passes kubernetes-validate --strict and checkov (as the training
  manifests in tests/launch/test_launch_kubernetes.py), runs the image's `fmnist-predict` hardened like the trainer, with flags
  fmnist-predict accepts, and fails at once on its permanent exit status.
- jobs/batch-prediction.yaml validates against jobs/batch-prediction.schema.yaml, whose fields are compared with
  the Google Cloud SDK's aiplatform v1 client (when gcloud is installed); jobs/model_endpoint.sh passes shellcheck
  and builds the right gcloud / REST calls.
- Tests that start a process of their own (kubectl, kubernetes-validate, checkov, shellcheck, gcloud's Python,
  the script) are marked e2e.
- TF Serving's REST API, row format: `{"instances": [{"image_bytes": {"b64": ...}}]}`; a `{"b64": ...}` value is
  base64-decoded into the bytes of a string input; a signature with a single input also takes the bare value.
"""

import base64
import copy
import json
import os
import re
import sys

import jsonschema
import numpy as np
import pytest
import yaml

from support import gcloud_sdk
from support.data import ROOT
from support.images import encode
from support.launch import (KUBERNETES_VERSIONS, MAIN_BIN, checkov, fake_client, find, flag_verdicts,
                            lint_tool, run)
from support.model import sample_images


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    proc = run([lint_tool("kubectl"), "kustomize", "k8s/predict"])
    assert proc.returncode == 0, proc.stderr
    path = tmp_path_factory.mktemp("predict") / "predict.yaml"
    path.write_text(proc.stdout)
    return path, [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


# ------------------------------------------------------------------------------------------------ Kubernetes


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_predict_job_is_valid_kubernetes_and_checkov_clean(rendered, tmp_path):
    path, docs = rendered
    for version in KUBERNETES_VERSIONS:
        result = run([MAIN_BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, path])
        assert result.returncode == 0, f"Kubernetes {version}:\n{result.stdout}{result.stderr}"
    insecure = copy.deepcopy(find(docs, "Job"))  # a control: the checks must fail on it
    pod = insecure["spec"]["template"]["spec"]
    del pod["securityContext"], pod["containers"][0]["securityContext"], pod["containers"][0]["resources"]
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "insecure.yaml").write_text(yaml.safe_dump(insecure))
    report = checkov([path, tmp_path / "control" / "insecure.yaml"])[0]
    assert report["summary"]["parsing_errors"] == 0
    failed = report["results"]["failed_checks"]
    ours = [c for c in failed if "control" not in c["file_path"]]
    assert not ours, "\n".join(f"{c['check_id']} {c['check_name']}" for c in ours)
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_11"} <= {c["check_id"] for c in failed}
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == {"CKV_K8S_43"}
    assert all(len(c["check_result"]["suppress_comment"]) > 20 for c in skipped)


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_predict_job_runs_fmnist_predict_hardened_through_workload_identity(rendered):
    _, docs = rendered
    job = find(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["fmnist-predict"]
    assert "fmnist-predict=trainer.commands.predict:run" in (ROOT / "setup.py").read_text()
    assert container["image"].endswith("fmnist-trainer:0.1.0-cpu")
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["seccompProfile"]["type"] == \
        "RuntimeDefault"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/home/trainer"}
    assert all("emptyDir" in v for v in pod["volumes"])
    for kind in ("cpu", "memory"):
        assert container["resources"]["limits"][kind] == container["resources"]["requests"][kind]
    sa = find(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] and pod["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert not [d for d in docs if d["kind"] == "Secret"]
    policy = find(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in policy["spec"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        job["spec"]["template"]["metadata"]["labels"].items()
    # The exit-code contract: 2 (permanent) fails the Job at once; disruptions are not counted.
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": container["name"], "operator": "In",
                                                             "values": [2]}}
    assert pod["restartPolicy"] == "Never"
    configmap = find(docs, "ConfigMap")
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in container["env"]}
    for name in ("MODEL_DIR", "INPUT", "OUTPUT"):
        assert env[name]["name"] == configmap["metadata"]["name"]
        assert configmap["data"][env[name]["key"]].startswith("gs://")


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_the_jobs_flags_are_fmnist_predicts(rendered):
    _, docs = rendered
    args = find(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [re.sub(r"\$\((\w+)\)", "gs://bucket/x", a) for a in args]
    verdicts = flag_verdicts("fmnist-predict", "trainer.commands.predict", [args, args + ["--batch_sise=2"]])
    assert verdicts[0] == "ok" and "batch_sise" in verdicts[1]


# -------------------------------------------------------------------------------------------------- Vertex AI


@pytest.fixture(scope="module")
def schema():
    loaded = yaml.safe_load((ROOT / "jobs" / "batch-prediction.schema.yaml").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


def spec():
    return yaml.safe_load((ROOT / "jobs" / "batch-prediction.yaml").read_text())


def test_batch_prediction_spec_validates(schema):
    assert not list(schema.iter_errors(spec()))


@pytest.mark.parametrize("mutate, complaint", [
    (lambda s: s.update(inputConfig={**s["inputConfig"], "instanceFormat": "jsonl"}), "instanceFormat"),
    (lambda s: s["inputConfig"].update(instancesFormat="json"), "'json' is not one of"),
    (lambda s: s["outputConfig"]["gcsDestination"].update(outputUriPrefix="/local"), "/local"),
    (lambda s: s["dedicatedResources"].update(replicaCount=2), "replicaCount"),
    (lambda s: s["dedicatedResources"]["machineSpec"].pop("machineType"), "'machineType' is a required"),
    (lambda s: s.update(model="fmnist-cnn"), "fmnist-cnn"),
    (lambda s: s.pop("outputConfig"), "'outputConfig' is a required"),
    (lambda s: s["labels"].update(App="x"), "App"),
])
def test_the_schema_rejects_what_vertex_would(schema, mutate, complaint):
    broken = spec()
    mutate(broken)
    assert complaint in " | ".join(e.message for e in schema.iter_errors(broken))


SDK_CHECK = gcloud_sdk.PRELUDE + r'''
fields = {}
for name in request["messages"]:
    cls = getattr(m.GoogleCloudAiplatformV1BatchPredictionJob, name, None) or getattr(m, name)
    fields[name] = {f.name: {"repeated": f.repeated, "kind": kind(f)} for f in cls.all_fields()}
message = export_util.Import(message_type=m.GoogleCloudAiplatformV1BatchPredictionJob, stream=request["spec"])
print(json.dumps({"fields": fields, "unrecognized": unrecognized(message)}))
'''


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_schema_and_spec_agree_with_the_google_cloud_sdk(schema):
    root = gcloud_sdk.root()
    if root is None:
        pytest.skip("the Google Cloud SDK (gcloud) is not installed: the schema is checked on its own")
    python = gcloud_sdk.python(root)
    defs = schema.schema["$defs"]
    messages = {d["x-message"]: name for name, d in defs.items() if "x-message" in d}
    result = run([python, "-c", SDK_CHECK, root],
                 input=json.dumps({"messages": list(messages), "spec": yaml.safe_dump(spec())}))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["unrecognized"] == []

    def resolve(prop):
        return defs[prop["$ref"].split("/")[-1]] if "$ref" in prop else prop

    for message, def_name in messages.items():
        if message == "LabelsValue":
            continue
        sdk_fields = answer["fields"][message]
        for field, prop in defs[def_name]["properties"].items():
            assert field in sdk_fields, f"{def_name}.{field} is not a field of {message}"
            sdk, prop = sdk_fields[field], resolve(prop)
            if sdk["repeated"]:
                assert prop["type"] == "array", (def_name, field)
                prop = resolve(prop["items"])
            if isinstance(sdk["kind"], dict):
                if "message" in sdk["kind"]:  # enums: their values are not spelt out in this schema
                    assert prop.get("x-message") == sdk["kind"]["message"], (def_name, field)
            elif sdk["kind"] == "integer":
                assert prop == defs["int"], (def_name, field)
            else:
                assert prop["type"] == sdk["kind"], (def_name, field)


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_model_endpoint_script_passes_shellcheck():
    result = run([lint_tool("shellcheck"), ROOT / "jobs" / "model_endpoint.sh"])
    assert result.returncode == 0, result.stdout


@pytest.mark.e2e  # starts kubectl, checkov, gcloud's Python, shellcheck or the script
def test_model_endpoint_script_calls_gcloud_and_the_rest_api(tmp_path, schema):
    gcloud, gcloud_log = fake_client(tmp_path / "bin", "gcloud")
    curl, curl_log = fake_client(tmp_path / "bin", "curl")
    env = {"PATH": os.environ["PATH"], "GCLOUD": str(gcloud), "CURL": str(curl), "PYTHON": sys.executable,
           "PROJECT_ID": "my-project", "REGION": "europe-west4", "BUCKET": "gs://my-bucket", "TMPDIR": str(tmp_path)}
    script = ROOT / "jobs" / "model_endpoint.sh"

    assert run([script, "upload", "gs://my-bucket/fmnist/cnn-vertex/"], env=env).returncode == 0
    args = gcloud_log.read_text().splitlines()
    assert args[:3] == ["ai", "models", "upload"]
    assert {"--artifact-uri=gs://my-bucket/fmnist/cnn-vertex", "--region=europe-west4", "--project=my-project",
            "--container-image-uri=europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"} <= set(args)

    assert run([script, "deploy", "42", "7"], env=env).returncode == 0
    args = gcloud_log.read_text().splitlines()
    assert args[:4] == ["ai", "endpoints", "deploy-model", "42"] and "--model=7" in args

    image = tmp_path / "shirt.png"
    images, _ = sample_images()
    image.write_bytes(encode(images[0]))
    assert run([script, "predict", "42", image], env=env).returncode == 0
    assert gcloud_log.read_text().splitlines()[:4] == ["ai", "endpoints", "predict", "42"]
    request = json.loads((tmp_path / "bin" / "gcloud.body").read_text())
    assert base64.b64decode(request["instances"][0]["image_bytes"]["b64"]) == image.read_bytes()

    assert run([script, "batch-predict", "7"], env=env).returncode == 0
    args = curl_log.read_text().splitlines()
    assert args[-1] == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project/locations/"
                        "europe-west4/batchPredictionJobs")
    assert "Authorization: Bearer token-123" in args
    body = json.loads((tmp_path / "bin" / "curl.body").read_text())
    assert not list(schema.iter_errors(body))
    assert body["model"] == "projects/my-project/locations/europe-west4/models/7"
    assert body["inputConfig"]["gcsSource"]["uris"] == ["gs://my-bucket/fmnist/batch/instances.jsonl"]
    assert not re.search(r"PROJECT_ID|REGION|BUCKET|MODEL_ID", json.dumps(body))

    assert run([script, "batch-predict", "7"], env={k: v for k, v in env.items() if k != "BUCKET"}).returncode == 2
    assert run([script, "launch"], env=env).returncode == 2
    dry = run([script, "upload", "gs://b/m", "--dry-run"], env=env)
    assert dry.returncode == 0 and dry.stdout.startswith(f"{gcloud} ai models upload")
    assert not list(tmp_path.glob("fmnist-vertex-*")), "the script's scratch folder was left behind"


# ------------------------------------------------------------------------------------------------ TF Serving


def tf_serving_rest_inputs(body, signature):
    """A TF Serving REST `predict` body (row format) -> the signature's input tensors, as tensorflow/serving's
    REST API documents it: `instances` is a list of rows; a row is an object of named inputs, or (for a
    signature with one input) the value itself; an object {"b64": ...} is base64-decoded into the bytes of a
    string input; rows are stacked along a new first (batch) dimension."""
    import tensorflow as tf
    specs = signature.structured_input_signature[1]
    rows = body["instances"]

    def decode(value, dtype):
        if isinstance(value, dict) and set(value) == {"b64"}:
            assert dtype == tf.string, "b64 values are for string inputs only"
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [decode(v, dtype) for v in value]
        return value

    if len(specs) == 1 and not (isinstance(rows[0], dict) and set(rows[0]) == set(specs)):
        (name,) = specs
        rows = [{name: row} for row in rows]
    return {name: tf.constant([decode(row[name], spec.dtype) for row in rows], dtype=spec.dtype)
            for name, spec in specs.items()}


def test_a_tf_serving_rest_body_gets_the_signatures_predictions(signatures, vertex_copy):
    import tensorflow as tf
    _, serve, serve_bytes = signatures
    images, _ = sample_images()
    pngs = [encode(image) for image in images[:8]]
    body = json.loads(json.dumps(
        {"signature_name": "serving_bytes",
         "instances": [{"image_bytes": {"b64": base64.b64encode(png).decode()}} for png in pngs]}))
    got = serve_bytes(**tf_serving_rest_inputs(body, serve_bytes))
    expected = serve_bytes(image_bytes=tf.constant(pngs))
    np.testing.assert_array_equal(got["probabilities"].numpy(), expected["probabilities"].numpy())
    np.testing.assert_array_equal(got["class_id"].numpy(), serve(images=images[:8])["class_id"].numpy())

    # Vertex AI's requests go to serving_default: the copy whose default takes image_bytes, with bare b64 rows.
    vertex = tf.saved_model.load(vertex_copy)
    default = vertex.signatures["serving_default"]
    bare = {"instances": [{"b64": base64.b64encode(png).decode()} for png in pngs]}
    np.testing.assert_array_equal(default(**tf_serving_rest_inputs(bare, default))["probabilities"].numpy(),
                                  expected["probabilities"].numpy())
