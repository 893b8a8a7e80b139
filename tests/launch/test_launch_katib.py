"""Hyperparameter tuning on Katib (k8s/katib) and on Vertex AI (jobs/hptuning-gpu.yaml): both search the same
space and read the same metric, and a tuning trial started as each engine starts it reports the validation
accuracy each one reads."""

import json
import re

import yaml

from support.launch import HPTUNING_SPEC, container, find, katib_trials, vertex_trials

import pytest

# The launchers' checks run the checkers and launchers as processes, or read what kubectl rendered: the end-to-end
# layer (`make test`).
pytestmark = pytest.mark.e2e


def test_tuning_reports_and_searches_the_same_on_katib_and_vertex(rendered):
    """Both engines optimise the metric the trainer reports (val_accuracy, maximised, the last report) on a
    validation split, over the trainer's own learning rate, batch size and epochs."""
    experiment = find(rendered["katib"][1], "Experiment")["spec"]
    vertex = yaml.safe_load(HPTUNING_SPEC.read_text())
    assert experiment["objective"]["objectiveMetricName"] == "val_accuracy" and \
        experiment["objective"]["type"] == "maximize"
    assert experiment["objective"]["metricStrategies"] == [{"name": "val_accuracy", "value": "latest"}]
    assert vertex["studySpec"]["metrics"] == [{"metricId": "val_accuracy", "goal": "MAXIMIZE"}]
    assert vertex["studySpec"]["measurementSelectionType"] == "LAST_MEASUREMENT"
    assert experiment["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    # Katib's StdOut collector's default filter finds the trainer's line.
    katib_filter = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
    assert re.findall(katib_filter, "val_accuracy=0.9123")[0][:2] == ("val_accuracy", "0.9123")
    trial = container({"spec": experiment["trialTemplate"]["trialSpec"]["spec"]})
    assert experiment["trialTemplate"]["primaryContainerName"] == trial["name"] == "trainer"
    assert trial["command"] == ["fmnist-train"]  # the collector wraps the command: it must be there
    assert "--validation_split=0.1" in trial["args"]
    assert "--validation_split=0.1" in vertex["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    # Every trial writes its own folder (a finished run in the way would be refused).
    assert "--output_dir=$(OUTPUT_DIR)/${trialParameters.trialName}" in trial["args"]
    assert {"name": "trialName", "description": experiment["trialTemplate"]["trialParameters"][-1]["description"],
            "reference": "${trialSpec.Name}"} in experiment["trialTemplate"]["trialParameters"]
    tuned = {"learningRate": "--learning_rate", "batchSize": "--batch_size", "epochs": "--epochs"}
    assert [p["name"] for p in experiment["parameters"]] == list(tuned)
    for name, flag in tuned.items():
        assert f"{flag}=${{trialParameters.{name}}}" in trial["args"]
    assert [p["parameterId"] for p in vertex["studySpec"]["parameters"]] == [f[2:] for f in tuned.values()]
    assert vertex["parallelTrialCount"] <= vertex["maxTrialCount"]
    # Katib labels the namespace for its metrics collector, or the trials would report nothing.
    namespace = find(rendered["katib"][1], "Namespace")
    assert namespace["metadata"]["labels"]["katib.kubeflow.org/metrics-collector-injection"] == "enabled"


KATIB_METRIC_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"  # its StdOut collector's default


def test_a_tuning_trial_reports_the_validation_accuracy_each_engine_reads(rendered, prepared_data, tmp_path):
    from support.data import data_flags
    from support.processes import assert_ok, read_metrics, run_trainer
    small = ["--train_examples=1000", "--epochs=1", "--batch_size=64", *data_flags()]  # the last value of a flag wins

    # Vertex AI: the trial's args with its parameters appended; AIP_MODEL_DIR and the hypertune file in the env.
    metric_file = tmp_path / "hypertune" / "output.metrics"
    vertex_args = vertex_trials(yaml.safe_load(HPTUNING_SPEC.read_text()))[0]
    result = run_trainer(*vertex_args, *small, env={"AIP_MODEL_DIR": str(tmp_path / "vertex"),
                                                    "CLOUD_ML_TRIAL_ID": "7",
                                                    "CLOUD_ML_HP_METRIC_FILE": str(metric_file)})
    assert_ok(result)
    reported = json.loads(metric_file.read_text().splitlines()[-1])
    assert reported["trial"] == "7"
    assert float(reported["val_accuracy"]) == read_metrics(tmp_path / "vertex")["validation_accuracy"]

    # Katib: the trial's container args with the parameters substituted; the collector parses stdout.
    katib_args = [arg.replace("$(OUTPUT_DIR)", str(tmp_path / "katib"))
                  for arg in katib_trials(find(rendered["katib"][1], "Experiment"))[0]]
    result = run_trainer(*katib_args, *small)
    assert_ok(result)
    values = [float(match.group(2)) for line in result.stdout.splitlines()
              for match in re.finditer(KATIB_METRIC_FILTER, line) if match.group(1) == "val_accuracy"]
    trial_dir = tmp_path / "katib" / "fmnist-tuning-abc123"
    assert values and values[-1] == read_metrics(trial_dir)["validation_accuracy"]
