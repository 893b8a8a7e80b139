"""TensorBoard's HParams tab: each run's settings and final metrics, so runs under one log folder compare.

`tensorboard --logdir out` then lists every run below out/ (out/mlp/logs, out/cnn/logs, ...) as one row of the
HParams tab: its settings (the job's that change the result, and the recipe's, as the run used them) beside its
final training and validation loss and accuracy (Keras's TensorBoard scalars, `epoch_*` in train/ and
validation/) and its test accuracy and loss, written after the evaluation. Written through
`tensorboard.plugins.hparams.api`, by the chief only.
"""

import tensorflow as tf
import tf_keras
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from trainer.config import run_config

# Job settings that say where and how a run is executed, not what it computes: not hyperparameters.
NOT_HYPERPARAMETERS = ("output_dir", "checkpoint_dir", "tensorboard_dir", "backup_every_steps", "data_dir",
                       "tfds_manual_dir", "overwrite", "metrics_port", "metrics_address",
                       "cluster_secret_file")
METRICS = (
    hp.Metric("test_accuracy", display_name="test accuracy"),
    hp.Metric("test_loss", display_name="test loss"),
    hp.Metric("epoch_accuracy", group="validation", display_name="validation accuracy"),
    hp.Metric("epoch_loss", group="validation", display_name="validation loss"),
    hp.Metric("epoch_accuracy", group="train", display_name="training accuracy"),
    hp.Metric("epoch_loss", group="train", display_name="training loss"),
)


def hyperparameters(cfg):
    """{name: value} of the run's settings: the job's that change the result, the recipe's as used. Unset
    values (None) are left out: one setting must keep one type across runs."""
    values = {d.name: getattr(cfg.job, d.name) for d in run_config.job_settings() if d.name not in NOT_HYPERPARAMETERS}
    recipe = cfg.recipe
    for declared in run_config.recipe_settings():
        value = recipe
        for part in declared.path:
            value = getattr(value, part)
        values[declared.name] = value
    return {name: value for name, value in values.items() if value is not None}


def domains():
    """An HParam per setting, with its choices where it has some (TensorBoard infers the rest)."""
    result = {}
    for declared in run_config.all_settings():
        domain = hp.Discrete(list(declared.choices)) if declared.choices else None
        result[declared.name] = hp.HParam(declared.name, domain, description=declared.help[:200])
    return result


class HParamsLogger(tf_keras.callbacks.Callback):
    """Writes the experiment's columns and this run's settings into `log_dir` when training begins."""

    def __init__(self, log_dir, cfg):
        super().__init__()
        self.log_dir, self.values = log_dir, hyperparameters(cfg)

    def on_train_begin(self, logs=None):
        known = domains()
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            hp.hparams_config(hparams=[known[name] for name in self.values], metrics=list(METRICS))
            hp.hparams({known[name]: value for name, value in self.values.items()})
        writer.close()


def write_results(log_dir, metrics):
    """The run's test accuracy and loss (metrics.json's), and the end of its HParams session, into `log_dir`."""
    writer = tf.summary.create_file_writer(log_dir)
    step = int(metrics.get("epochs_completed") or 0)
    with writer.as_default():
        for name in ("test_accuracy", "test_loss"):
            if metrics.get(name) is not None:
                tf.summary.scalar(name, float(metrics[name]), step=step)
        end = hparams_summary.session_end_pb(api_pb2.STATUS_SUCCESS)
        tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=step)
    writer.close()

