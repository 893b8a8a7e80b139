"""The average of the weights (--ema_momentum): the scores and the SavedModel use it, and it is training state, so
a run stopped by SIGTERM in the middle of an epoch saves it in the backup and the rerun ends bit-exact with the
run never stopped; `fit`'s own copy of the average into the weights does nothing (optimization.AveragedWeights)."""

import signal

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from support.data import splits, train_in_process
from trainer.training import optimization
from trainer.config import recipes
from trainer.resilience import checkpoints, signals

# They read backups, weights and metrics, never the SavedModel (support/fixtures.py).
pytestmark = pytest.mark.usefixtures("placeholder_saved_model")

# 1,000 examples at batch 64: 16 steps an epoch, 4 executions of 4 steps; per-epoch backups, as launchers run.
SETTINGS = dict(model="mlp", recipe="seed", epochs=3, batch_size=64, steps_per_execution=4, ema_momentum=0.9)


def test_the_average_is_used_only_when_asked_and_fits_own_copy_does_nothing():
    kernel = tf.Variable(tf.ones([2]), name="kernel")
    sgd = optimization.optimizer(recipes.Recipe(optimizer="sgd", learning_rate=0.1, ema_momentum=0.5), 10)
    sgd.apply_gradients([(tf.ones([2]), kernel)])  # Nesterov: the weights move to 0.81
    sgd.finalize_variable_values([kernel])  # what `fit` calls at its end, also when a SIGTERM stopped it
    np.testing.assert_allclose(kernel.numpy(), 0.81)
    sgd.use_average([kernel])
    np.testing.assert_allclose(kernel.numpy(), 0.5 * 1 + 0.5 * 0.81)
    plain = optimization.optimizer(recipes.Recipe(), 10)
    assert not plain.use_ema


@pytest.fixture
def sigterm_at_execution(monkeypatch):
    """SIGTERM, as the signal watcher hands it over, as the n-th execution of the run begins."""
    calls = []
    on_batch_begin = tf_keras.callbacks.TensorBoard.on_train_batch_begin

    def then_signal(self, batch, logs=None):
        calls.append(batch)
        if len(calls) == at[0]:
            signals.PROCESS.handle(signal.SIGTERM)
        return on_batch_begin(self, batch, logs)
    at = [0]
    monkeypatch.setattr(tf_keras.callbacks.TensorBoard, "on_train_batch_begin", then_signal)
    monkeypatch.setattr(tf_keras.callbacks.TensorBoard, "_implements_train_batch_hooks", lambda self: True)

    def arm(execution):
        calls.clear()
        at[0] = execution
    return arm


def test_a_sigterm_mid_epoch_saves_the_average_and_the_rerun_ends_as_the_run_never_stopped(
        fashion, tmp_path, sigterm_at_execution):
    data = splits(fashion, 1000, test_examples=200)
    without = train_in_process(tmp_path / "no-average", data, **{**SETTINGS, "ema_momentum": 0.0})
    uninterrupted = train_in_process(tmp_path / "uninterrupted", data, **SETTINGS)
    assert uninterrupted["weights_sha256"] != without["weights_sha256"]  # the exported weights are the average

    sigterm_at_execution(6)  # epoch 2's second execution: the stop saves step 8 of 16, no epoch's end
    with pytest.raises(checkpoints.Stopped, match="at epoch 2, step 8 of 16"):
        train_in_process(tmp_path / "out", data, **SETTINGS)
    latest = tf.train.latest_checkpoint(str(tmp_path / "out" / "checkpoints" / checkpoints.CHECKPOINTS))
    slots = [name for name, _ in tf.train.list_variables(latest) if name.startswith("model/optimizer/_variables/")]
    assert len(slots) == 3 * 6, slots  # Adam's two moments and the average, of the MLP's 6 trainable variables

    sigterm_at_execution(0)
    resumed = train_in_process(tmp_path / "out", data, **SETTINGS)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (1, 8)
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
