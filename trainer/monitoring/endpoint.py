"""`--metrics_port=N`: the training's progress as Prometheus text on http://<pod>:N/metrics, while it trains.

It listens on --metrics_address (0.0.0.0 by default: a scrape reaches a pod at its own IP); in k8s/ a
NetworkPolicy lets only the monitoring namespace in.

Served through the official `prometheus_client` (its own HTTP server thread, a registry of this run's alone). The
values are read when Prometheus scrapes, from `progress.Progress` and `faults.FaultRecord`: the training loop does
no extra work for them.

    fmnist_train_global_step          steps done, the backup's included (a resumed run goes on from its step)
    fmnist_train_total_steps          steps of the whole run
    fmnist_train_epoch                the epoch in progress (1-based); fmnist_train_epochs: the run's epochs
    fmnist_train_examples_per_second  training throughput of the last finished epoch
    fmnist_train_loss                 the last loss Keras reported (the epoch's running mean)
    fmnist_train_val_accuracy         the last finished epoch's validation accuracy (with --validation_split)
    fmnist_train_eta_seconds          time left until the end of training (progress.py says how it is estimated)
    fmnist_train_restarts             restarts of this job from a backup
    fmnist_train_seconds_since_backup age of the newest preemption backup
    fmnist_train_info                 1, labelled with model, recipe, task and whether this task is the chief

Every worker of a multi-worker job serves its own copy (the pods of a JobSet share one template, so each is
scraped): they train in lockstep, so their step, epoch and ETA agree, and a worker that falls behind or stops
answering shows. Dashboards pick the chief with `fmnist_train_info{chief="true"}`. A value not known yet
(no finished epoch, no backup) is left out rather than reported as 0.
"""

import math

import tf_keras
from absl import logging
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

PREFIX = "fmnist_train"


class TrainingCollector:
    """A prometheus_client collector: every scrape reads the current values."""

    def __init__(self, progress, faults, info):
        self.progress, self.faults, self.info = progress, faults, info

    def collect(self):
        p = self.progress
        loss = p.logs.get("loss", p.epoch_logs.get("loss"))
        values = [
            ("global_step", "Training steps done, those restored from the backup included.", p.global_step),
            ("total_steps", "Training steps of the whole run.", p.total_steps),
            ("epoch", "The epoch in progress, 1-based.", p.epoch),
            ("epochs", "Epochs of the whole run.", p.epochs),
            ("examples_per_second", "Training examples per second in the last finished epoch.",
             p.examples_per_second),
            ("loss", "The last training loss Keras reported (the running mean over the epoch).", loss),
            ("val_accuracy", "Validation accuracy of the last finished epoch.", p.epoch_logs.get("val_accuracy")),
            ("eta_seconds", "Estimated seconds until training ends.", p.eta_seconds),
            ("restarts", "Restarts of this job from a preemption backup.", self.faults.restarts),
            ("seconds_since_backup", "Seconds since the newest preemption backup was saved.",
             self.faults.seconds_since_backup()),
        ]
        for name, documentation, value in values:
            value = _number(value)
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)
        info = GaugeMetricFamily(f"{PREFIX}_info", "The run this process trains (always 1).",
                                 labels=sorted(self.info))
        info.add_metric([str(self.info[k]) for k in sorted(self.info)], 1)
        yield info


def _number(value):
    """A float for Prometheus, or None for a value not known yet (a tensor is read here, in the server's thread)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


class MetricsEndpoint(tf_keras.callbacks.Callback):
    """Serves TrainingCollector on `port` from the start of `fit` to its end.

    A port that cannot be opened (taken by another process, e.g. a second worker on the same machine) costs a
    WARNING, never the run: monitoring must not stop training.
    """

    def __init__(self, port, progress, faults, info, address="0.0.0.0"):
        super().__init__()
        self.port, self.address = port, address
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(TrainingCollector(progress, faults, info))
        self.server = None

    def on_train_begin(self, logs=None):
        try:
            self.server, _ = start_http_server(self.port, addr=self.address, registry=self.registry)
        except OSError as error:
            logging.warning("Cannot serve the metrics on %s port %d (%s): training goes on without them.",
                            self.address, self.port, error.strerror or error)
            return
        logging.info("Serving Prometheus metrics on %s port %d (/metrics).", self.address, self.port)

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
