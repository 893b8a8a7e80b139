"""What the launcher tests share (tests/test_launch_*.py, tests/launch/test_serving_launch.py): the checkers' venvs, a
subprocess runner, a finder for rendered documents, a stand-in command-line client, absl's verdict on flags, and
the launchers' own files read once: every kustomization rendered by kubectl, the Vertex AI specs and their schemas,
the Dockerfile (the session fixtures `rendered`, `schema`, `hptuning_schema`: a pytest plugin, loaded by conftest).

checkov, kubectl and shellcheck live in their own venv (requirements-lint.txt; checkov's pins clash with the
trainer's): build/lint-venv, or $FMNIST_LINT_VENV. kubernetes-validate is in the trainer's venv.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import jsonschema
import pytest
import referencing
import yaml

from support.data import ROOT

LINT_VENV = pathlib.Path(os.environ.get("FMNIST_LINT_VENV") or ROOT / "build" / "lint-venv")
MAIN_BIN = pathlib.Path(sys.executable).parent
# Kubernetes versions the manifests must be valid for: an old supported one and the newest schema we have.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
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


def checkov(files, frameworks=("kubernetes",)):
    """checkov's JSON reports for `files`, offline: a list, one report per framework that found files."""
    cmd = [lint_tool("checkov"), "--framework", *frameworks, "--skip-download", "--compact", "-o", "json"]
    for f in files:
        cmd += ["-f", f]
    reports = json.loads(run(cmd, env={**os.environ, **QUIET_CHECKOV}, timeout=300).stdout)
    return reports if isinstance(reports, list) else [reports]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def fake_client(folder, name):
    """A stand-in `docker`/`gcloud`/`curl` that records its arguments, keeps a copy of a --config file (as
    <name>.config) and of a request body (--data-binary @FILE or --json-request=FILE, as <name>.body), and answers
    `auth print-access-token`."""
    folder.mkdir(exist_ok=True)
    log = folder / f"{name}.args"
    script = folder / name
    script.write_text(f"""#!/bin/sh
: > '{log}'
for a in "$@"; do
  printf '%s\\n' "$a" >> '{log}'
  case "$a" in
    --config=*) cp "${{a#--config=}}" '{folder}/{name}.config' ;;
    @*) cp "${{a#@}}" '{folder}/{name}.body' ;;
    --json-request=*) cp "${{a#--json-request=}}" '{folder}/{name}.body' ;;
  esac
done
[ "$1 $2" = "auth print-access-token" ] && echo token-123
exit 0
""")
    script.chmod(0o755)
    return script, log


PARSE_FLAGS = r"""
import importlib, json, sys
from absl import flags
flag_values = importlib.import_module(sys.argv[2]).COMMAND.flag_values  # the command's flags (trainer.commands.cli)
results = []
for args in json.load(sys.stdin):
    try:
        flag_values([sys.argv[1], *args])
        results.append("ok")
    except flags.Error as error:
        results.append(str(error))
    flag_values.unparse_flags()
print(json.dumps(results))
"""


def flag_verdicts(program, module, argument_lists):
    """What absl makes of each argument list in a fresh Python, with the flags of `module`'s command (its
    `COMMAND`, a trainer.commands.cli.Command): "ok", or the error absl gives."""
    result = run([sys.executable, "-c", PARSE_FLAGS, program, module], input=json.dumps(argument_lists))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---- the launchers' files --------------------------------------------------------------------------------------

KUSTOMIZATIONS = {"base": "k8s/base", "cpu": "k8s/overlays/cpu", "gpu": "k8s/overlays/gpu",
                  "multi-worker": "k8s/overlays/multi-worker", "katib": "k8s/katib"}


VERTEX_SPECS = ("gpu", "gpu-spot", "multi-worker", "python-package")


HPTUNING_SPEC = ROOT / "jobs" / "hptuning-gpu.yaml"


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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def schema():
    with open(ROOT / "jobs" / "customjobspec.schema.json") as f:
        loaded = json.load(f)
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


@pytest.fixture(scope="session")
def hptuning_schema(schema):
    """jobs/hptuningjob.schema.json, its trialJobSpec resolved to jobs/customjobspec.schema.json."""
    with open(ROOT / "jobs" / "hptuningjob.schema.json") as f:
        loaded = json.load(f)
    jsonschema.Draft202012Validator.check_schema(loaded)
    registry = referencing.Registry().with_resources(
        [(s["$id"], referencing.Resource.from_contents(s)) for s in (schema.schema, loaded)])
    return jsonschema.Draft202012Validator(loaded, registry=registry)


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


def vertex_spec(name):
    return yaml.safe_load((ROOT / "jobs" / f"customjob-{name}.yaml").read_text())


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


def team_overlay(folder, base, output_dir):
    """Renders a team's overlay of the kustomization `base` (a path): a name prefix `team-a-`, the image at a
    digest of example.com, OUTPUT_DIR merged into the ConfigMap; returns the documents kubectl rendered."""
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(f"""
resources: [{os.path.relpath(base, folder)}]
namePrefix: team-a-
images:
  - name: REGION-docker.pkg.dev/PROJECT_ID/fmnist/fmnist-trainer
    newName: example.com/fmnist-trainer
    digest: sha256:{"ab" * 32}
configMapGenerator:
  - name: fmnist-run
    behavior: merge
    literals: [OUTPUT_DIR={output_dir}]
""")
    proc = run([lint_tool("kubectl"), "kustomize", folder])
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def fake_trainer(folder):
    """A folder holding a stand-in `fmnist-train` that prints its TF_CONFIG, then each argument, one a line; for
    running a pod's container command as Kubernetes would (put the folder first on PATH)."""
    folder.mkdir()
    script = folder / "fmnist-train"
    script.write_text("#!/bin/sh\nprintf '%s\\n' \"$TF_CONFIG\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    script.chmod(0o755)
    return folder


def tf_configs_of_pods(container_spec, environment, fake_bin, pods):
    """The TF_CONFIG that a pod's exact container command gives the trainer, for each of `pods` pods: a stand-in
    trainer on `fake_bin` prints the TF_CONFIG it got, then its arguments (which must be the container's).
    `environment(index)`: the environment Kubernetes gives pod `index`."""
    configs = []
    for index in range(pods):
        env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", **environment(index)}
        result = run([*container_spec["command"], *container_spec["args"]], env=env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[1:] == container_spec["args"]
        configs.append(json.loads(lines[0]))
    return configs


def resolved_environment(job, fields, other=None):
    """The environment Kubernetes gives a pod of `job`: plain values, fieldRefs looked up in `fields`, and anything
    else (a ConfigMap's key, ...) as `other` (None: left out)."""
    env = {}
    for e in container(job)["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif other is not None:
            env[e["name"]] = other
    return env
