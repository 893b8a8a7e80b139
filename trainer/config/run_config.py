"""One run's settings: the job's own (`Job`) and the chosen recipe's (`recipes.Recipe`), each declared once.

Precedence, highest first: an explicit flag, the launcher's environment (Vertex AI's `AIP_MODEL_DIR`,
`AIP_CHECKPOINT_DIR`, `AIP_TENSORBOARD_LOG_DIR`), the recipe, then the defaults below. The same image and flags
therefore work under docker, Kubernetes and Vertex AI. `trainer.config.tables` writes the README's flag
tables from these declarations.
"""

import dataclasses
import ipaddress
import os
from typing import Optional

from trainer.training import fashion_mnist, models, precision
from trainer.config import recipes, declare
from trainer.errors import UserError
from trainer.config.declare import setting
from trainer import storage

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")


def _is_address(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Job:
    """What to train, on which data, where the results go and how the run is executed."""
    model: str = setting("cnn", "Which registered model to train. Unset with --recipe=speedrun: its own network, "
                                "speedrun.", choices=models.names)
    recipe: str = setting(
        recipes.DEFAULT, "How it is trained: fast (the seed's accuracy in a fraction of its time), seed (the "
                         "notebook's: Adam 1e-3, batch 32, 10 epochs), strong (for vgg), speedrun (the strong recipe's "
                         "accuracy in a fraction of its time, on its own network). Every recipe setting below can "
                         "be overridden.", choices=recipes.names)
    precision: str = setting(
        "auto", "Number format of training. auto: mixed bfloat16 when the recipe asks for mixed precision and the "
                "hardware computes bfloat16 natively (AVX512_BF16 or AMX CPUs, GPUs of compute capability 8.0+), "
                "else float32; mixed_float16 suits older GPUs. Evaluation and the SavedModel are float32 either way.",
        choices=precision.CHOICES)
    strategy: str = setting(
        "auto", "tf.distribute strategy. auto: multi_worker_mirrored when TF_CONFIG names more than one task, "
                "mirrored when more than one GPU is visible, else the default (single-device) strategy.",
        choices=STRATEGIES)
    output_dir: Optional[str] = setting(
        None, "Where the run's SavedModel, metrics.json and logs go: a local path or gs://bucket/prefix.",
        **storage.location("output_dir"), env="AIP_MODEL_DIR")
    checkpoint_dir: Optional[str] = setting(
        None, "Where the preemption backup lives while training. Unset: <output_dir>/checkpoints.",
        **storage.location("checkpoint_dir"), env="AIP_CHECKPOINT_DIR")
    tensorboard_dir: Optional[str] = setting(
        None, "TensorBoard log directory. Unset: <output_dir>/logs.",
        **storage.location("tensorboard_dir"), env="AIP_TENSORBOARD_LOG_DIR")
    backup_every_steps: Optional[int] = setting(
        None, "Save the preemption backup every N training steps, so that a kill loses at most N steps (unset: once "
              "per epoch). SIGTERM and SIGINT save the step in progress either way.",
        check=lambda v: v > 0, message="--backup_every_steps must be a positive whole number of steps, e.g. 200.")
    cluster_timeout: float = setting(
        600.0, "Many workers: seconds to wait for every peer at start-up (pods being scheduled, images pulling), "
               "with a line every 30 s naming who is missing; then exit 75 (retry me). 0: wait forever.",
        check=lambda v: v >= 0, message="--cluster_timeout must be 0 (wait forever) or a number of seconds, e.g. 600.")
    metrics_port: Optional[int] = setting(
        None, "Serve the training's progress as Prometheus metrics on this port (/metrics: step, epoch, examples/s, "
              "loss, val_accuracy, ETA, restarts, seconds since the last backup) while it trains. Unset: off.",
        check=lambda v: 0 < v < 65536, message="--metrics_port must be a TCP port from 1 to 65535, e.g. "
                                               "--metrics_port=8000.")
    metrics_address: str = setting(
        "0.0.0.0", "With --metrics_port: the address the metrics endpoint listens on. 0.0.0.0 (every IPv4 "
                   "address) is what a Prometheus scrape of a pod needs, the pod's own IP; 127.0.0.1 keeps it to "
                   "this machine, :: serves IPv6 too.",
        check=_is_address, message="--metrics_address must be an IP address to listen on, e.g. 0.0.0.0, "
                                   "127.0.0.1 or ::.")
    cluster_secret_file: Optional[str] = setting(
        None, "Many workers: a file holding a secret shared by the job's workers (a Kubernetes Secret, "
              "docs/distributed.md): each side of the start-up meeting proves it, so no stranger on the network "
              "can form, stall or fail the job. Unset: $FMNIST_CLUSTER_SECRET (the secret itself), else none.",
        env="FMNIST_CLUSTER_SECRET_FILE")
    data_dir: Optional[str] = setting(
        None, "TFDS data directory (unset: TFDS's own, ~/tensorflow_datasets).",
        **storage.location("data_dir"))
    tfds_manual_dir: Optional[str] = setting(
        None, "A folder of the four official Fashion-MNIST .gz files: TFDS prepares the data set from it without "
              "network access. Unset: TFDS downloads them.")
    train_examples: Optional[int] = setting(
        None, "Train on the first N training examples only (unset: all 60,000).",
        check=lambda v: 0 < v <= fashion_mnist.TRAIN_SIZE,
        message=f"--train_examples must be between 1 and {fashion_mnist.TRAIN_SIZE} (the size of the training "
                "split), or left unset.")
    validation_split: float = setting(
        0.0, "Fraction of the training examples (the last ones) held out as a validation set: val_accuracy per "
             "epoch, for tuning without looking at the test split. 0: none.",
        check=lambda v: 0 <= v < 0.5,
        message="--validation_split must be a fraction from 0 up to (not including) 0.5, e.g. --validation_split=0.1.")
    early_stopping_patience: int = setting(
        0, "With --validation_split: stop after N epochs without a better val_accuracy and keep the best epoch's "
           "weights. 0: train every epoch.",
        check=lambda v: v >= 0, message="--early_stopping_patience must be 0 (off) or a positive number of epochs, e.g. 3.")
    seed: int = setting(42, "Random seed for weights, shuffling and augmentation.", check=lambda v: v >= 0,
                        message="--seed must be zero or a positive whole number.")
    overwrite: bool = setting(False, "Replace a finished run already in --output_dir instead of refusing.")


def job_settings():
    return declare.declared(Job)


def recipe_settings():
    """The recipe's fields as settings whose default is None: "the chosen recipe's value"."""
    return declare.declared(recipes.Recipe, flag_default=None)


def all_settings():
    return job_settings() + recipe_settings()


def cross_check(values):
    """Checks that involve more than one setting; None or the message that says what to do."""
    if values.get("early_stopping_patience") and not values.get("validation_split"):
        return "--early_stopping_patience needs a validation set to watch: add --validation_split=0.1 (for example)."
    return None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    job: Job                 # the job's settings, output and backup locations resolved
    recipe: recipes.Recipe   # the chosen recipe with the command line's overrides
    flags: dict              # every setting as given (None: not given), recorded in metrics.json


def build(values, environ=None):
    """The run's config from {setting name: value} (missing or None: not given). Raises UserError."""
    environ = os.environ if environ is None else environ
    for declared in all_settings():
        problem = declared.problem(values.get(declared.name))
        if problem:
            raise UserError(problem)
    problem = cross_check(values)
    if problem:
        raise UserError(problem)
    values = with_recipe_model(values)
    job_values = {}
    for declared in job_settings():
        value = values.get(declared.name)
        if value is None and declared.env:
            value = environ.get(declared.env) or None
        if value is not None:
            job_values[declared.name] = value
    job = Job(**job_values)
    if not job.output_dir:
        raise UserError("no output location: pass --output_dir=PATH (a folder or gs://bucket/prefix), "
                        "or set AIP_MODEL_DIR.")
    if job.tfds_manual_dir and not os.path.isdir(job.tfds_manual_dir):
        raise UserError(f"--tfds_manual_dir={job.tfds_manual_dir} is not a folder: point it at the folder holding "
                        "the four Fashion-MNIST .gz files, or leave it out to download them.")
    if not job.checkpoint_dir:
        local = not storage.is_gcs(job.output_dir)
        base = os.path.abspath(job.output_dir) if local else job.output_dir.rstrip("/")
        job = dataclasses.replace(job, checkpoint_dir=f"{base}/checkpoints")
    overrides = {d.name: values.get(d.name) for d in recipe_settings()}
    recipe = recipes.get(job.recipe, job.model).with_overrides(**overrides)
    flags = {d.name: values.get(d.name, d.default) for d in all_settings()}
    return RunConfig(job=job, recipe=recipe, flags=flags)


def with_recipe_model(values):
    """`values` with the model resolved: as given, else the recipe's own network (recipes.OWN_MODELS), else the
    flag's default (cnn). metrics.json's `flags` records the model trained."""
    if values.get("model") is not None:
        return values
    default = next(d.default for d in job_settings() if d.name == "model")
    return {**values, "model": recipes.own_model(values.get("recipe") or recipes.DEFAULT) or default}


def from_flags(flag_values, environ=None):
    values = {d.name: flag_values[d.name].value for d in all_settings()}
    if not flag_values["model"].present:  # absl fills in the default: "not given" lets the recipe choose
        values["model"] = None
    return build(values, environ)


def make(environ=None, **values):
    """A config from keyword settings, as the command line would build it (for tests and scripts)."""
    unknown = set(values) - {d.name for d in all_settings()}
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    return build(values, {} if environ is None else environ)
