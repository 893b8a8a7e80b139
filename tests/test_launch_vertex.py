"""Vertex AI custom jobs (jobs/), checked without a cloud: the specs validate against jobs/customjobspec.schema.json
and jobs/hptuningjob.schema.json (closed objects, API types), which are compared field by field with the Google
Cloud SDK's aiplatform v1 client when the SDK is installed; jobs/submit_vertex.sh builds the right gcloud command
lines, the python-package upload lands in a local Cloud Storage emulator, and the real gcloud CLI submits every
job to a local stand-in for the Vertex AI API, which receives exactly the specs."""

import copy
import json
import os
import pathlib
import re
import sys

import pytest
import yaml

from support import emulator, gcloud_sdk
from support.data import ROOT
from support.launch import HPTUNING_SPEC, MAIN_BIN, VERTEX_SPECS, fake_client, run, vertex_spec

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
    """gcp-storage-emulator on 127.0.0.1 with a bucket `launch`, a process of its own (the scripts' gcloud and
    Python reach it from theirs); yields STORAGE_EMULATOR_HOST."""
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with emulator.as_process(MAIN_BIN / "gcp-storage-emulator", log, bucket="launch") as host:
        yield host


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
