"""The README's quick start names only what exists: make targets, Dockerfile stages, files and kustomizations,
trainer and predictor flags (absl's verdict), submit_vertex.sh's specs, the Kubernetes objects its kubectl commands
wait for, and the Cloud Storage folders the jobs write; its placeholders are set once and `fill` leaves none in any
manifest it applies. No README line is longer than 120 characters."""

import re
import shlex

import pytest
import yaml

from support.data import ROOT
from support.launch import find, flag_verdicts, lint_tool, run, vertex_spec

# kubectl renders the manifests and absl parses the flags in processes of their own: the end-to-end layer.
pytestmark = pytest.mark.e2e

PLACEHOLDERS = {"PROJECT_ID": "my-project", "REGION": "us-central1", "BUCKET": "my-fmnist-bucket"}
REPO_PATH = re.compile(r"^(k8s|jobs|docs|trainer|tests|bench)/|^\.venv/bin/|^(Dockerfile|Makefile)$")


def readme():
    return (ROOT / "README.md").read_text()


def quick_start():
    text = readme()
    assert "\n## Quick start\n" in text, "the README has no quick start"
    section = text.split("\n## Quick start\n", 1)[1]
    return section.split("\n## ", 1)[0]


def commands():
    """Every shell command of the quick start's sh blocks: continuation lines joined, comments dropped, split
    at pipes, `&&` and `;`, as token lists (shell loops and function definitions skipped)."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", quick_start(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            command = []
            for token in tokens + [";"]:
                if token in ("|", "&&", ";") or token.endswith(";"):
                    if token.endswith(";") and token != ";":
                        command.append(token[:-1])
                    if command and command[0] not in ("for", "do", "done", "fill()", "{"):
                        found.append(command)
                    command = []
                else:
                    command.append(token)
    return found


def targets():
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def test_the_quick_start_covers_every_target_in_few_commands():
    sections = re.findall(r"^### (.+)$", quick_start(), re.M)
    assert sections == ["Local", "docker run", "Once per project", "GKE Job", "JobSet", "TrainJob", "Katib",
                        "Vertex AI custom job", "Vertex AI tuning", "Batch prediction"]
    for name, body in zip(sections, re.split(r"^### .+$", quick_start(), flags=re.M)[1:]):
        lines = [line for block in re.findall(r"```sh\n(.*?)```", body, re.S)
                 for line in block.replace("\\\n", " ").splitlines() if line.strip()]
        limit = 20 if name == "Once per project" else 5
        assert 1 <= len(lines) <= limit, (name, lines)


def test_every_make_target_stage_file_and_spec_exists():
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", (ROOT / "Dockerfile").read_text(), re.M))
    specs = re.search(r'^specs="([^"]+)"', (ROOT / "jobs" / "submit_vertex.sh").read_text(), re.M)
    specs = set(re.split(r", | or ", specs.group(1)))
    checked = set()
    for command in commands():
        if command[0] == "make":
            assert set(command[1:]) - {"RECIPE=fast"} <= targets(), command
        if command[:2] == ["docker", "build"] and "--target" in command:
            assert command[command.index("--target") + 1] in stages | {"$target"}, command
        if command[0] == "jobs/submit_vertex.sh":
            assert command[1] in specs, (command, specs)
        for token in command:
            path = token.split("=", 1)[-1]
            if REPO_PATH.match(path):
                assert (ROOT / path).exists() or (ROOT / ".venv" / "bin" / path.rsplit("/", 1)[-1]).exists(), token
                checked.add(path)
    assert "jobs/submit_vertex.sh" in checked and "k8s/trainjob/runtime" in checked
    for stage in ("gpu", "cpu"):
        assert stage in stages


def trainer_arguments(command):
    """The trainer flags of a command that runs the trainer, else None."""
    if command[0] in (".venv/bin/fmnist-train", "jobs/run_docker.sh"):
        return command[1:]
    return None


def test_every_trainer_and_predictor_flag_is_real():
    train, predict = [], []
    for command in commands():
        if trainer_arguments(command) is not None:
            train.append(trainer_arguments(command))
        if command[0] == ".venv/bin/fmnist-predict":
            predict.append(command[1:])
    assert train and predict
    verdicts = flag_verdicts("fmnist-train", "trainer.commands.train", [*train, ["--model=cnn", "--epoch=3"]])
    assert verdicts[:-1] == ["ok"] * len(train), list(zip(train, verdicts))
    assert "epoch" in verdicts[-1]  # the control: a misspelt flag is refused
    verdicts = flag_verdicts("fmnist-predict", "trainer.commands.predict", predict)
    assert verdicts == ["ok"] * len(predict), list(zip(predict, verdicts))


@pytest.fixture(scope="module")
def applied():
    """{kustomization: its rendering, filled in as `fill` does} for every `kubectl kustomize DIR | fill | ...`."""
    fill = re.search(r'^fill\(\) \{ sed "([^"]+)"; \}$', quick_start(), re.M)
    assert fill, "the quick start defines fill()"
    rules = re.findall(r"s/(\w+)/\$(\w+)/g", fill.group(1))
    assert sorted(rules) == sorted((name, name) for name in PLACEHOLDERS)
    rendered = {}
    for command in commands():
        if command[:2] == ["kubectl", "kustomize"]:
            proc = run([lint_tool("kubectl"), "kustomize", ROOT / command[2]])
            assert proc.returncode == 0, proc.stderr
            text = proc.stdout
            for placeholder, _ in rules:
                text = text.replace(placeholder, PLACEHOLDERS[placeholder])
            rendered[command[2]] = text
    return rendered


def test_fill_leaves_no_placeholder_and_the_exports_set_each_once(applied):
    assert set(applied) >= {"k8s/overlays/gpu", "k8s/overlays/multi-worker", "k8s/trainjob/runtime",
                            "k8s/trainjob/multi-node", "k8s/katib", "k8s/predict"}
    for folder, text in applied.items():
        assert not re.search(r"PROJECT_ID|REGION|BUCKET", text), folder
    section = quick_start()
    for name in PLACEHOLDERS:
        assert len(re.findall(rf"^export {name}=\S+ +# .+", section, re.M)) == 1, name  # once, with how to fill
    used = set(re.findall(r"\$(\w+)", " ".join(" ".join(c) for c in commands())))
    assert used <= set(PLACEHOLDERS) | {"target", "sa"}, used
    # The one placeholder left in a command is JOB_ID, which the line before it lists.
    literal = set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", " ".join(" ".join(c) for c in commands())))
    assert literal <= set(PLACEHOLDERS) | {"JOB_ID"}, literal


def test_the_objects_waited_for_and_the_outputs_read_are_what_the_manifests_make(applied):
    objects = {(d["kind"].lower(), d["metadata"]["name"]) for text in applied.values()
               for d in yaml.safe_load_all(text) if d}
    # JobSet and Katib make Jobs of their own; the quick start only names the objects applied.
    outputs = {re.sub(r"my-fmnist-bucket", "$BUCKET", m) for text in applied.values()
               for m in re.findall(r"OUTPUT_DIR: (gs://\S+)", text)}
    outputs |= {vertex_spec("gpu")["baseOutputDirectory"]["outputUriPrefix"].replace("BUCKET", "$BUCKET") + "/model"}
    read, waited = [], []
    for command in commands():
        if command[:3] == ["kubectl", "-n", "fmnist"]:
            command = ["kubectl", *command[3:]]
        if command[0] == "kubectl" and command[1] in ("wait", "logs", "get"):
            for token in command[2:]:
                if re.fullmatch(r"(job|jobset)/[\w-]+", token):
                    assert tuple(token.split("/")) in objects, token
                    waited.append(token)
            if command[1] == "get" and command[2] in ("trainjob", "experiment"):
                assert (command[2], command[3]) in objects, command
                waited.append(command[3])
        if command[:3] == ["gcloud", "storage", "cat"]:
            read.append(command[3].rsplit("/", 1))
    for folder, name in read:
        assert name in ("metrics.json", "photos.jsonl"), name
        if name == "metrics.json":
            assert folder in outputs, (folder, outputs)
    configmaps = [d for d in yaml.safe_load_all(applied["k8s/predict"]) if d and d["kind"] == "ConfigMap"]
    assert any(c["data"].get("OUTPUT") == "gs://my-fmnist-bucket/predictions/photos.jsonl" for c in configmaps)
    assert any(c["data"].get("MODEL_DIR") == "gs://my-fmnist-bucket/fmnist/cnn" for c in configmaps)
    assert {"job/fmnist-train", "jobset/fmnist-multi-worker", "fmnist-multi-node", "fmnist-tuning",
            "job/fmnist-predict"} <= set(waited), waited
    assert "gs://$BUCKET/fmnist/cnn" in outputs  # the GKE Job's model is the one batch prediction reads
    assert find([d for d in yaml.safe_load_all(applied["k8s/trainjob/runtime"]) if d], "ClusterTrainingRuntime",
                "fmnist-tensorflow")


def test_no_readme_line_is_longer_than_120_characters():
    long = [(number, len(line)) for number, line in enumerate(readme().splitlines(), 1) if len(line) > 120]
    assert not long, long
