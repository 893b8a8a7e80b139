"""Reports the tuning metric (validation accuracy) after every epoch, the way hyperparameter-tuning engines read it,
so that their early stopping can end a trial that is going nowhere.

- Vertex AI's tuning service: the `cloudml-hypertune` package, which writes to $CLOUD_ML_HP_METRIC_FILE (Vertex AI
  sets it, with $CLOUD_ML_TRIAL_ID, in every trial); `metricId` in jobs/hptuning-*.yaml is METRIC. One HyperTune
  object per run: it rewrites the file with every report it has made.
- Katib's StdOut metrics collector: a line `2026-12-01T22:50:10.123456Z epoch=3 val_accuracy=0.9123` on stdout.
  The RFC 3339 timestamp comes first because Katib orders a trial's reports by it (its early stopping compares
  the first `start_step` of them; without one, every report gets the same zero time), and `name=value` is its
  default filter's format; k8s/katib/experiment.yaml's objective is METRIC.
The step is the epoch (1-based). The last report is the value of the weights the run keeps, metrics.json's
`validation_accuracy`: the last epoch's, or, when early stopping restored the best epoch's weights, that value once
more at the last step. Only the chief reports.
"""

import datetime
import os
import sys

import tf_keras

METRIC = "val_accuracy"
VERTEX_ENVIRONMENT = ("CLOUD_ML_HP_METRIC_FILE", "CLOUD_ML_TRIAL_ID")


def kept_value(rows, early_stopping):
    """val_accuracy of the weights a run keeps (metrics.json's `validation_accuracy`, the trials' metric): the best
    epoch's under early stopping, else the last one's; None without a validation split."""
    accuracies = [row[METRIC] for row in rows if METRIC in row]
    if not accuracies:
        return None
    return max(accuracies) if early_stopping else accuracies[-1]


def katib_line(value, step, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} epoch={step} {METRIC}={value}"


class TrialReporter(tf_keras.callbacks.Callback):
    """Reports METRIC at the end of every epoch that has it, and the kept weights' value at the end of `fit`.

    `history`: the run's backup.EpochHistory, whose rows hold the epochs of a resumed run's earlier processes too.
    """

    def __init__(self, history, early_stopping, environ=None, stream=None):
        super().__init__()
        self.history, self.early_stopping = history, early_stopping
        environ = os.environ if environ is None else environ
        self.vertex = any(name in environ for name in VERTEX_ENVIRONMENT)
        self.stream = stream
        self.reported = []  # (step, value) of every report of this process
        self._hypertune = None

    def report(self, value, step):
        if self.vertex:
            if self._hypertune is None:
                import hypertune
                self._hypertune = hypertune.HyperTune()
            self._hypertune.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=METRIC, metric_value=value, global_step=step)
        print(katib_line(value, step), file=self.stream or sys.stdout, flush=True)
        self.reported.append((step, value))

    def on_epoch_end(self, epoch, logs=None):
        if logs and METRIC in logs:
            self.report(float(logs[METRIC]), epoch + 1)

    def on_train_end(self, logs=None):
        kept = kept_value(self.history.rows, self.early_stopping)
        if kept is not None and self.reported and kept != self.reported[-1][1]:
            self.report(kept, self.reported[-1][0])
