"""One training run, as named steps: check the outputs -> strategy -> data -> model -> fit -> evaluate and export
-> publish.

Many workers: every worker runs these same steps in lockstep. Only the chief publishes; the others evaluate and
export into a temporary folder that they delete (TensorFlow's documented pattern), so their work is identical to
the chief's and nothing of theirs lands in the output location.
"""

import dataclasses
import hashlib
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
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from trainer.training import data, distribution, evaluation, models, optimization, precision
from trainer.monitoring import callbacks as monitoring_callbacks, faults, hparams, trainjob_status, tuning
from trainer.storage import outputs
from trainer.resilience import checkpoints, guard, pauses
from trainer.serving import signatures
from trainer.storage.files import failed_write
from trainer.errors import UserError


def run(cfg, splits=None, strategy=None):
    """Trains, evaluates and exports one model as `cfg` (a config.RunConfig) says; returns the metrics it published.

    `splits` (data.Splits) and `strategy` replace the TFDS data and the strategy the flags choose: seams for tests
    and scripts, as in Model Garden's `run(flags_obj, datasets_override, strategy_override)`.
    """
    job, recipe = cfg.job, cfg.recipe
    tf_config = distribution.cluster_spec_from_env()
    chief = distribution.is_chief(tf_config)
    multi_worker = distribution.cluster_size(tf_config) > 1
    output, finished = check_outputs(cfg, chief)
    if finished:
        return finished
    configure_threads(recipe, multi_process=multi_worker)
    with guard.RunGuard(cfg, tf_config, strategy=strategy) as run_guard, \
            trainjob_status.reporting(os.environ, chief) as status:
        strategy = run_guard.strategy
        logging.info("Output in %s; preemption backup in %s; TensorBoard logs in %s.", output.url,
                     job.checkpoint_dir, job.tensorboard_dir or output.child("logs"))

        pauses.pause("start-up")
        started = time.perf_counter()
        if splits is None:
            pauses.pause("data")
            splits = load_splits(job)
        data_seconds = time.perf_counter() - started

        tf_keras.utils.set_random_seed(job.seed)  # the initial weights follow; the stream is keyed by its own seed
        start_step = run_guard.resume_step(data.steps_per_epoch(len(splits.train[1]), recipe.batch_size))
        train, validation = datasets(cfg, splits, start_step)
        model, policy = build_model(cfg, strategy, len(splits.train[1]), train_images=splits.train[0])
        staging = output.new_staging_dir() if chief else tempfile.mkdtemp(prefix="fmnist-worker-")
        history, train_seconds = fit(cfg, model, splits, train, validation,
                                     log_dir=tensorboard_dir(job, output, chief, staging), chief=chief,
                                     run_guard=run_guard, start_step=start_step, status=status)
        optimization.use_average(model)  # only after a finished `fit` (optimization.AveragedWeights)
        trained = plain_copy(job.model, model)
        with failed_write(staging, "the result (staging the SavedModel and predictions)"):
            test_scores = evaluate_and_export(cfg, trained, splits.test, staging)
        metrics = run_record(cfg, model, strategy, policy, tf_config, splits, history, test_scores,
                             data_seconds=data_seconds, train_seconds=train_seconds, output=output,
                             goodput=run_guard.goodput.summary(int(model._train_counter.numpy())))
        if chief:
            hparams.write_results(tensorboard_dir(job, output, chief, staging), metrics)
            outputs.publish_or_retry(output, staging, metrics)
            run_guard.discard()  # only now: until the result is published, a rerun resumes
            if status is not None:
                status.finish({name: metrics[name] for name in ("test_accuracy", "test_loss")})
            logging.info("Test accuracy %.4f, loss %.4f; results in %s", metrics["test_accuracy"],
                         metrics["test_loss"], output.url)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            logging.info("This worker is done (weights sha256 %s); the chief publishes the results.",
                         metrics["weights_sha256"])
        run_guard.finish()
        return metrics


def check_outputs(cfg, chief):
    """The output location is checked before anything else, so a bad one fails in seconds, not after training.

    Returns (output, metrics of the same command's finished run or None): a rerun of a command that already
    finished (a retried pod whose first try published) has nothing left to do.
    """
    job = cfg.job
    output = outputs.open_output(job.output_dir)
    output.check_writable()
    if output.is_finished():
        if not job.overwrite:
            finished = outputs.read_metrics(output.url)
            if finished.get("flags") == cfg.flags:
                logging.info("%s already holds the finished result of this command: nothing to do.", output.url)
                if chief:
                    checkpoints.discard(job.checkpoint_dir)  # a clean-up that was cut short
                return output, finished
            raise UserError(f"{job.output_dir} already holds a finished run of other settings (metrics.json): "
                            "pass --overwrite to replace it, or choose another --output_dir.")
        if chief:
            output.unmark_finished()
            checkpoints.discard(job.checkpoint_dir)  # the replaced run's backup is not this run's
    return output, None


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
        logging.debug("TensorFlow already started: threads_per_op=%d is not applied.", recipe.threads_per_op)


def load_splits(job):
    """The data set prepared (offline from --tfds_manual_dir, if given) and decoded into memory."""
    try:
        builder = data.prepare(job.data_dir, job.tfds_manual_dir)
    except NonMatchingChecksumError as error:  # damaged files: a retry reads the same bytes
        where = f" in --tfds_manual_dir={job.tfds_manual_dir}" if job.tfds_manual_dir else ""
        raise UserError(f"the Fashion-MNIST files{where} fail TFDS's checksum "
                        f"({str(error).strip().splitlines()[0][:200]}): replace them with the official files, or "
                        "leave --tfds_manual_dir out to download them.") from None
    logging.info("Data: %s in %s.", data.DATASET, builder.data_dir)
    return data.load_splits(builder, job.train_examples, job.validation_split)


def build_model(cfg, strategy, train_examples, train_images=None):
    """The registered model, compiled with the recipe, its variables created under the strategy (and set from the
    training images, for a model whose registry entry initialises from data)."""
    recipe = cfg.recipe
    policy = precision.resolve(cfg.job.precision, recipe.mixed_precision)
    spec = models.get(cfg.job.model)
    with strategy.scope(), precision.policy(policy):
        model = spec.build()
        if spec.initialize and train_images is not None:
            spec.initialize(model, train_images)
        model.compile(
            optimizer=optimization.optimizer(recipe, data.steps_per_epoch(train_examples, recipe.batch_size)),
            loss=optimization.crossentropy(recipe.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=recipe.steps_per_execution,
            jit_compile=recipe.jit_compile,
        )
    logging.info("Training %s (%d parameters) with recipe %s: %d epochs, global batch %d on %d replica(s), "
                 "strategy %s, %s.", cfg.job.model, model.count_params(), recipe.name, recipe.epochs,
                 recipe.batch_size, strategy.num_replicas_in_sync, distribution.name_of(strategy), policy)
    return model, policy


def tensorboard_dir(job, output, chief, staging):
    """The chief logs to --tensorboard_dir, else into the output (directly when local, staged for gs://)."""
    if chief and job.tensorboard_dir:
        return job.tensorboard_dir
    if chief and isinstance(output, outputs.LocalOutput):
        return output.child("logs")
    return os.path.join(staging, "logs")


def datasets(cfg, splits, start_step=0):
    """The training stream from global step `start_step` (shuffled, augmented if the recipe says so) and the
    validation split, if any."""
    input_shape = models.get(cfg.job.model).input_shape
    train = data.train_dataset(*splits.train, cfg.recipe.batch_size, input_shape, cfg.job.seed,
                               cfg.recipe.augmentation, start_step=start_step)
    validation = data.eval_dataset(*splits.validation, input_shape) if splits.validation else None
    return train, validation


def fit(cfg, model, splits, train, validation, log_dir, chief, run_guard, start_step=0, status=None):
    """`model.fit` with the backup (`run_guard`'s callbacks), TensorBoard and (if asked) early stopping; returns
    (history, seconds)."""
    job, recipe = cfg.job, cfg.recipe
    steps = data.steps_per_epoch(len(splits.train[1]), recipe.batch_size)
    others = [tf_keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch", profile_batch=0)]
    if early_stopping(cfg, splits):
        others.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=job.early_stopping_patience, restore_best_weights=True, verbose=1))
    callbacks, history = run_guard.callbacks(chief, steps, recipe.steps_per_execution, start_step, others)
    fault_record = faults.FaultRecord(job.checkpoint_dir, resumed=start_step > 0)
    fault_record.record_restarts(run_guard.goodput.restarts_before() + int(start_step > 0))
    fault_record.watch(run_guard.backup)
    callbacks += monitoring_callbacks.for_fit(cfg, train_examples=len(splits.train[1]), chief=chief, log_dir=log_dir,
                                              history=history, early_stopping=early_stopping(cfg, splits),
                                              start_step=start_step, test_examples=len(splits.test[1]),
                                              validation_examples=len(splits.validation[1]) if splits.validation else 0,
                                              fault_record=fault_record, status_reporter=status)
    logging.info("%d training examples%s.", len(splits.train[1]),
                 f", {len(splits.validation[1])} held out for validation" if splits.validation else "")
    started = time.perf_counter()
    model.fit(train, epochs=recipe.epochs, steps_per_epoch=steps, validation_data=validation, callbacks=callbacks,
              verbose=0)  # trainer.monitoring.progress prints the epochs' lines
    return history, time.perf_counter() - started


def early_stopping(cfg, splits):
    return bool(cfg.job.early_stopping_patience and splits.validation)


def plain_copy(model_name, model):
    """The trained weights in a plain, single-device float32 model: free of the strategy's variables and of the
    training's number format, so evaluation needs no collectives and the SavedModel loads anywhere."""
    plain = models.get(model_name).build()
    plain.set_weights(model.get_weights())
    return plain


def evaluate_and_export(cfg, model, test, staging):
    """Scores on the test split (with the recipe's test-time views); the SavedModel and the test predictions into
    `staging`. Returns the scores."""
    input_shape = models.get(cfg.job.model).input_shape
    views = cfg.recipe.test_time_augmentation
    pauses.pause("evaluation")  # tests: a stop in evaluation, and the next one in export
    probabilities, labels = evaluation.predict(model, data.eval_dataset(*test, input_shape), views)
    test_scores, predicted = evaluation.summarize(probabilities, labels)
    pauses.pause("export")
    signatures.export_saved_model(model, input_shape, os.path.join(staging, "saved_model"), views)
    np.savez_compressed(os.path.join(staging, "test_predictions.npz"),
                        class_id=predicted.astype(np.uint8), label=labels.astype(np.uint8),
                        probabilities=probabilities.astype(np.float16))
    test_scores["weights_sha256"] = weights_fingerprint(model)
    return test_scores


def run_record(cfg, model, strategy, policy, tf_config, splits, history, test_scores, *, data_seconds,
               train_seconds, output, goodput=None):
    """metrics.json: the scores, and everything needed to know how they were obtained."""
    job, recipe = cfg.job, cfg.recipe
    train_examples = len(splits.train[1])
    validation_examples = len(splits.validation[1]) if splits.validation else 0
    epochs_run = history.epochs_this_run
    return {
        "model": job.model,
        "params": int(model.count_params()),
        **test_scores,
        "recipe": recipe.name,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "recipe_settings": dataclasses.asdict(recipe),
        "precision": policy,
        "strategy": distribution.name_of(strategy),
        "num_replicas": int(strategy.num_replicas_in_sync),
        "num_workers": max(1, distribution.cluster_size(tf_config)),
        "seed": job.seed,
        "train_examples": train_examples,
        "validation_examples": validation_examples,
        "validation_accuracy": tuning.kept_value(history.rows, early_stopping(cfg, splits))
        if validation_examples else None,
        "epochs_completed": len(history.rows),
        "data_seconds": round(data_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(train_examples * epochs_run / train_seconds, 1) if epochs_run else None,
        "resumed_from_epoch": history.resumed_from_epoch,
        "resumed_from_step": history.resumed_from_step,
        "history": history.rows,
        "goodput": goodput,
        "saved_model": output.child("saved_model"),
        "versions": versions(),
        "flags": cfg.flags,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


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
