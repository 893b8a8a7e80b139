"""Submitting to Vertex AI, without a cloud: jobs/submit_vertex.sh fills in every spec and builds the right gcloud
command lines (a stand-in gcloud records them), the python-package upload lands in a local Cloud Storage emulator,
and the real gcloud CLI submits every job to a local stand-in for the Vertex AI API, which receives exactly the
specs (the specs and their schemas themselves: test_launch_vertex.py)."""

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


def test_submit_vertex_gives_every_multi_worker_job_a_fresh_meeting_secret(tmp_path):
    """Both pools of one job share FMNIST_CLUSTER_SECRET (trainer/resilience/meeting.py); the next job gets
    another; the filled-in spec is its owner's only."""
    gcloud, _ = fake_client(tmp_path / "bin", "gcloud")
    env = {"PATH": os.environ["PATH"], "GCLOUD": str(gcloud), "PROJECT_ID": "my-project", "BUCKET": "my-bucket",
           "TMPDIR": str(tmp_path)}
    seen = []
    for _ in range(2):
        dry = run([ROOT / "jobs" / "submit_vertex.sh", "multi-worker", "--dry-run"], env=env)
        assert dry.returncode == 0, dry.stderr
        kept = pathlib.Path(re.search(r"--config=(\S+)", dry.stdout).group(1))
        assert kept.stat().st_mode & 0o077 == 0
        pools = yaml.safe_load(kept.read_text())["workerPoolSpecs"]
        values = {e["value"] for pool in pools for e in pool["containerSpec"]["env"]
                  if e["name"] == "FMNIST_CLUSTER_SECRET"}
        [secret] = values
        assert re.fullmatch(r"[0-9a-f]{64}", secret) and len(pools) == 2
        seen.append(secret)
    assert seen[0] != seen[1]


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
            # multi-worker: the meeting secret submit_vertex.sh generated (its own test checks it)
            secret = next((e["value"] for pool in spec["workerPoolSpecs"]
                           for e in pool.get("containerSpec", {}).get("env", [])), "CLUSTER_SECRET")
            assert proto_json(spec["workerPoolSpecs"]) == [
                json.loads(json.dumps(pool).replace("REGION-docker.pkg.dev/PROJECT_ID",
                                                    "europe-west4-docker.pkg.dev/my-project")
                           .replace('"value": "CLUSTER_SECRET"', f'"value": "{secret}"')
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
