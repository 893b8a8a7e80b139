"""Reports the tuning metric (validation accuracy) the way hyperparameter-tuning engines read it.

- Vertex AI's tuning service: the `cloudml-hypertune` package, which writes to $CLOUD_ML_HP_METRIC_FILE (Vertex AI
  sets it, with $CLOUD_ML_TRIAL_ID, in every trial); `metricId` in jobs/hptuning-*.yaml is METRIC.
- Katib's StdOut metrics collector: a `val_accuracy=0.9123` line on stdout (its default `name=value` format),
  the last one counting; k8s/katib/experiment.yaml's objective is METRIC.
The value is metrics.json's `validation_accuracy`: the kept weights' (the best epoch's under early stopping).
"""

import os

METRIC = "val_accuracy"
VERTEX_ENVIRONMENT = ("CLOUD_ML_HP_METRIC_FILE", "CLOUD_ML_TRIAL_ID")


def report(metrics, environ=None):
    """Reports `metrics["validation_accuracy"]`, if the run held out a validation split; returns the value."""
    environ = os.environ if environ is None else environ
    value = metrics.get("validation_accuracy")
    if value is None:
        return None
    if any(name in environ for name in VERTEX_ENVIRONMENT):
        import hypertune
        hypertune.HyperTune().report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=METRIC, metric_value=value, global_step=metrics.get("epochs_completed"))
    print(f"{METRIC}={value}", flush=True)
    return value
