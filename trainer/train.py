"""One training run, top to bottom: strategy -> data -> model -> fit -> evaluate -> export -> publish.

Preemption: Keras's `BackupAndRestore` keeps the training state in the checkpoint folder at every epoch end; a
rerun of the same command resumes from the last finished epoch and the backup is deleted once training succeeds.

Many workers: every worker runs this same code in lockstep. Only the chief publishes; the others evaluate and
export into a temporary folder that they delete (TensorFlow's documented pattern), so their work is identical
to the chief's and nothing of theirs lands in the output location.
"""

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tf_keras
from absl import logging

from trainer import data, distribution, evaluate, export, models, outputs, precision
from trainer.errors import UserError

HISTORY_FILE = "history.json"


def run(cfg):
    """Trains, evaluates and exports one model as `cfg` says; returns the metrics dict it published."""
    tf_config = distribution.cluster_spec_from_env()
    chief = distribution.is_chief(tf_config)

    # The output location is checked before anything else, so a bad one fails in seconds, not after training.
    output = outputs.open_output(cfg.output_dir)
    output.check_writable()
    if output.is_finished():
        if not cfg.overwrite:
            raise UserError(f"{cfg.output_dir} already holds a finished run (metrics.json): pass --overwrite "
                            "to replace it, or choose another --output_dir.")
        if chief:
            output.unmark_finished()

    recipe = cfg.recipe
    configure_threads(recipe, multi_process=distribution.cluster_size(tf_config) > 1)
    strategy, strategy_name = distribution.get_strategy(cfg.strategy, tf_config)
    check_checkpoint_dir(cfg.checkpoint_dir)
    logging.info("Preemption backup in %s; TensorBoard logs in %s.", cfg.checkpoint_dir,
                 cfg.tensorboard_dir or output.child("logs"))

    # Data: decoded into memory once, before the training clock starts (its time is reported separately).
    started = time.perf_counter()
    builder = data.prepare(cfg.data_dir, cfg.tfds_manual_dir)
    spec = models.get(cfg.model)
    train_images, train_labels = data.load(builder, data.train_split(cfg.train_examples))
    validation_examples = int(round(len(train_labels) * cfg.validation_split))
    if validation_examples:
        # Held out for tuning and early stopping, never the test split.
        (train_images, train_labels), held_out = data.hold_out(train_images, train_labels, validation_examples)
        validation = data.eval_dataset(*held_out, 1000, spec.input_shape)
    else:
        validation = None
    train_examples = len(train_labels)
    steps_per_epoch = math.ceil(train_examples / recipe.batch_size)
    tf_keras.utils.set_random_seed(cfg.seed)
    train_ds = data.train_dataset(train_images, train_labels, recipe.batch_size, spec.input_shape, cfg.seed,
                                  recipe.augmentation)
    data_seconds = time.perf_counter() - started

    policy = precision.resolve(cfg.precision, recipe.mixed_precision)
    with strategy.scope(), precision.policy(policy):
        model = spec.build()
        model.compile(
            optimizer=optimizer(recipe, steps_per_epoch),
            loss=crossentropy(recipe.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=recipe.steps_per_execution,
            jit_compile=recipe.jit_compile,
        )
    logging.info("Training %s (%d parameters) with recipe %s: %d epochs, global batch %d on %d replica(s), "
                 "strategy %s, %s; %d training examples%s.", cfg.model, model.count_params(), recipe.name,
                 recipe.epochs, recipe.batch_size, strategy.num_replicas_in_sync, strategy_name, policy,
                 train_examples,
                 f", {validation_examples} held out for validation" if validation_examples else "")

    # The chief stages what it will publish; other workers write the same files somewhere they then delete.
    staging = output.new_staging_dir() if chief else tempfile.mkdtemp(prefix="fmnist-worker-")
    log_dir = cfg.tensorboard_dir if (chief and cfg.tensorboard_dir) else (
        output.child("logs") if chief and isinstance(output, outputs.LocalOutput) else os.path.join(staging, "logs"))
    history = EpochHistory(os.path.join(cfg.checkpoint_dir, HISTORY_FILE), write=chief)
    callbacks = [
        tf_keras.callbacks.BackupAndRestore(backup_dir=cfg.checkpoint_dir),
        tf_keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch", profile_batch=0),
        history,
    ]
    early_stopping = bool(cfg.early_stopping_patience and validation is not None)
    if early_stopping:
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=cfg.early_stopping_patience, restore_best_weights=True, verbose=1))
    started = time.perf_counter()
    model.fit(train_ds, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch, validation_data=validation,
              callbacks=callbacks, verbose=2)
    train_seconds = time.perf_counter() - started

    # Evaluate and export a plain, single-device float32 copy: the same weights, free of the strategy's variables
    # and of the training's number format, so evaluation needs no collectives and the SavedModel loads anywhere.
    plain_model = spec.build()
    plain_model.set_weights(model.get_weights())
    fingerprint = weights_fingerprint(plain_model)
    logging.info("Trained weights fingerprint (sha256): %s", fingerprint)
    test_ds = data.eval_dataset(*data.load(builder, "test"), 1000, spec.input_shape)
    probabilities, labels = evaluate.predict(plain_model, test_ds, recipe.test_time_augmentation)
    test_metrics, predicted = evaluate.summarize(probabilities, labels)
    export.export_saved_model(plain_model, spec.input_shape, os.path.join(staging, "saved_model"),
                              recipe.test_time_augmentation)
    np.savez_compressed(os.path.join(staging, "test_predictions.npz"),
                        class_id=predicted.astype(np.uint8), label=labels.astype(np.uint8))

    epochs_run = history.epochs_this_run
    metrics = {
        "model": cfg.model,
        "params": int(model.count_params()),
        **test_metrics,
        "recipe": recipe.name,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "recipe_settings": dataclasses.asdict(recipe),
        "precision": policy,
        "strategy": strategy_name,
        "num_replicas": int(strategy.num_replicas_in_sync),
        "num_workers": max(1, distribution.cluster_size(tf_config)),
        "seed": cfg.seed,
        "train_examples": train_examples,
        "validation_examples": validation_examples,
        "validation_accuracy": kept_validation_accuracy(history.rows, early_stopping) if validation_examples
        else None,
        "epochs_completed": len(history.rows),
        "data_seconds": round(data_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(train_examples * epochs_run / train_seconds, 1) if epochs_run else None,
        "resumed_from_epoch": history.resumed_from_epoch,
        "weights_sha256": fingerprint,
        "history": history.rows,
        "saved_model": output.child("saved_model"),
        "versions": versions(),
        "flags": cfg.flags,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if chief:
        output.publish(staging, metrics)
        history.delete()
        logging.info("Test accuracy %.4f, loss %.4f; results in %s", metrics["test_accuracy"],
                     metrics["test_loss"], cfg.output_dir)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def kept_validation_accuracy(rows, early_stopping):
    """val_accuracy of the weights the run keeps: the best epoch's under early stopping, else the last one's."""
    accuracies = [row["val_accuracy"] for row in rows if "val_accuracy" in row]
    if not accuracies:
        return None
    return max(accuracies) if early_stopping else accuracies[-1]


def check_checkpoint_dir(path):
    """The backup is written through TensorFlow's file systems: prove they can write there before training."""
    probe = f"{path.rstrip('/')}/.write-test-{os.getpid()}"
    try:
        tf.io.gfile.makedirs(path)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        hint = (" TensorFlow's gs:// ignores STORAGE_EMULATOR_HOST: with an emulator, pass a local --checkpoint_dir."
                if path.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST") else "")
        raise UserError(f"cannot write the preemption backup to --checkpoint_dir={path} "
                        f"({type(error).__name__}); choose a writable folder or gs:// prefix.{hint}") from None


def configure_threads(recipe, multi_process):
    """One thread per op for a recipe that asks (tiny models), before TensorFlow's runtime starts.

    Not under many workers: their collectives need the runtime's default pools.
    """
    if recipe.threads_per_op is None or multi_process:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(recipe.threads_per_op)
        tf.config.threading.set_inter_op_parallelism_threads(recipe.threads_per_op)
    except RuntimeError:  # the runtime already runs (the trainer called in-process): keep its threads
        logging.warning("TensorFlow already started: the recipe's threads_per_op=%d is not applied.",
                        recipe.threads_per_op)


# Variables that weight decay leaves alone: batch normalization's scale and shift and every bias. They set a
# feature's scale and offset, not what it detects; sparing them lowered the strong recipe's validation loss at the
# same accuracy (docs/benchmarks.md, third round).
NOT_DECAYED = ("gamma", "beta", "bias")


def optimizer(recipe, steps_per_epoch):
    """The recipe's optimizer: Adam as in the seed, or SGD with Nesterov momentum; both with decoupled weight
    decay (AdamW-style: each step shrinks every kernel by learning rate x weight_decay) when the recipe sets one."""
    rate = learning_rate(recipe, steps_per_epoch)
    decay = recipe.weight_decay or None
    if recipe.optimizer == "sgd":
        chosen = tf_keras.optimizers.SGD(learning_rate=rate, momentum=0.9, nesterov=True, weight_decay=decay)
    elif recipe.optimizer == "adam":
        chosen = tf_keras.optimizers.Adam(learning_rate=rate, weight_decay=decay)
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    if decay:
        chosen.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    return chosen


def crossentropy(label_smoothing):
    """Sparse categorical cross-entropy; with smoothing, the target puts `label_smoothing` spread over all classes.

    A plain per-example function, so Keras reduces it correctly over replicas under every strategy.
    """
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(labels, probabilities):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), models.NUM_CLASSES)
        return tf_keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)
    return smoothed_crossentropy


def learning_rate(recipe, steps_per_epoch):
    """The recipe's learning rate: constant, or linear warm-up then a cosine or straight-line decay to zero."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    total = recipe.epochs * steps_per_epoch
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "warmup_cosine":
        return tf_keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else recipe.learning_rate, decay_steps=max(1, total - warmup),
            warmup_target=recipe.learning_rate if warmup else None, warmup_steps=warmup)
    if recipe.schedule == "linear_decay":
        return WarmupLinearDecay(recipe.learning_rate, warmup, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, max(total_steps, warmup_steps + 1)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warming = self.peak * step / max(self.warmup_steps, 1)
        decaying = self.peak * (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return tf.maximum(0.0, tf.where(step < self.warmup_steps, warming, decaying))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


class EpochHistory(tf_keras.callbacks.Callback):
    """Per-epoch loss, accuracy and time, kept beside the backup so a resumed run still has its whole history.

    It also says, in the log, when a run resumes from a backup instead of starting afresh.
    """

    def __init__(self, path, write):
        super().__init__()
        self.path, self.write = path, write
        self.rows, self.resumed_from_epoch, self.epochs_this_run = [], 0, 0
        self._first_epoch, self._epoch_started = True, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._first_epoch = False
            if epoch > 0:
                self.resumed_from_epoch = epoch
                if tf.io.gfile.exists(self.path):
                    with tf.io.gfile.GFile(self.path) as f:
                        self.rows = [row for row in json.load(f) if row["epoch"] <= epoch]
                logging.info("Resumed from the backup in %s: epochs 1-%d were done, continuing at epoch %d.",
                             os.path.dirname(self.path), epoch, epoch + 1)
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_started, 3)}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        self.rows.append(row)
        self.epochs_this_run += 1
        if self.write:
            tf.io.gfile.makedirs(os.path.dirname(self.path))
            with tf.io.gfile.GFile(self.path + ".tmp", "w") as f:
                json.dump(self.rows, f)
            tf.io.gfile.rename(self.path + ".tmp", self.path, overwrite=True)

    def delete(self):
        """After success, like the backup itself: nothing is left to resume."""
        if self.write and tf.io.gfile.exists(self.path):
            tf.io.gfile.remove(self.path)
        directory = os.path.dirname(self.path)
        if self.write and tf.io.gfile.isdir(directory) and not tf.io.gfile.listdir(directory):
            tf.io.gfile.rmtree(directory)


def weights_fingerprint(model):
    """A hash of every trained weight: workers that trained in lockstep report the same one."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def versions():
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tensorflow_datasets": tfds.__version__,
    }
