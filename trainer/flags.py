"""Every command-line flag of the trainer, defined and validated in one place.

Launchers (docker, Kubernetes, Vertex AI) pass the same flags; what a launcher sets through its environment
(`AIP_MODEL_DIR`, `AIP_CHECKPOINT_DIR`, `AIP_TENSORBOARD_LOG_DIR`, `TF_CONFIG`) is read in `trainer.config`, and an
explicit flag always wins over the environment.

Validators reject bad values while flags are parsed, so a wrong command fails in a second with one line that says
what to do, before TensorFlow is even imported.
"""

from absl import flags

from trainer import models, precision, recipes

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")

FLAGS = flags.FLAGS

flags.DEFINE_enum("model", "cnn", models.names(), "Which registered model to train.")
flags.DEFINE_enum(
    "recipe", recipes.DEFAULT, recipes.names(),
    "Training recipe: epochs, batch size, learning-rate schedule and tricks. `seed` is the original notebook's "
    "(Adam 1e-3, batch 32, 10 epochs). --epochs/--batch_size/--learning_rate override the recipe's values.")
flags.DEFINE_integer("epochs", None, "Training epochs (default: the recipe's).")
flags.DEFINE_integer("batch_size", None, "Global batch size, split across all replicas (default: the recipe's).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (default: the recipe's).")
flags.DEFINE_enum(
    "precision", "auto", precision.CHOICES,
    "Number format of training. `auto`: mixed bfloat16 when the recipe asks for mixed precision and the hardware "
    "computes bfloat16 natively (a CPU with AVX512_BF16 or AMX, GPUs of compute capability 8.0+), else float32. "
    "`mixed_float16` suits older GPUs (T4, V100). Evaluation and the SavedModel are float32 either way.")
flags.DEFINE_enum(
    "strategy", "auto", STRATEGIES,
    "tf.distribute strategy. `auto`: multi_worker_mirrored when TF_CONFIG names more than one task, mirrored "
    "when more than one GPU is visible, else the default (single-device) strategy.")
flags.DEFINE_string(
    "output_dir", None,
    "Where the run's SavedModel, metrics.json and logs go: a local path or gs://bucket/prefix. "
    "Default: $AIP_MODEL_DIR (set by Vertex AI).")
flags.DEFINE_string(
    "checkpoint_dir", None,
    "Where the preemption backup lives while training (BackupAndRestore). Default: $AIP_CHECKPOINT_DIR, else "
    "<output_dir>/checkpoints for a local output_dir.")
flags.DEFINE_string(
    "tensorboard_dir", None,
    "TensorBoard log directory. Default: $AIP_TENSORBOARD_LOG_DIR, else <output_dir>/logs.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets).")
flags.DEFINE_string(
    "tfds_manual_dir", None,
    "A folder holding the four official Fashion-MNIST .gz files; TFDS then prepares the data set from it without "
    "network access. Without it TFDS downloads the files.")
flags.DEFINE_integer("train_examples", None, "Train on the first N training examples only (default: all 60,000).")
flags.DEFINE_float(
    "validation_split", 0.0,
    "Fraction of the training examples (the last ones) held out as a validation set: per-epoch val_accuracy for "
    "tuning and early stopping, so that the test split is looked at once, at the end. 0: none.")
flags.DEFINE_integer(
    "early_stopping_patience", 0,
    "With --validation_split: stop after this many epochs without a better val_accuracy and keep the best "
    "epoch's weights. 0: train every epoch.")
flags.DEFINE_integer("seed", 42, "Random seed for weights, shuffling and augmentation.")
flags.DEFINE_bool("overwrite", False, "Replace a finished run already in --output_dir instead of refusing.")


def _positive_or_none(value):
    return value is None or value > 0


flags.register_validator(
    "epochs", _positive_or_none, message="--epochs must be a positive whole number, e.g. --epochs=10.")
flags.register_validator(
    "batch_size", _positive_or_none, message="--batch_size must be a positive whole number, e.g. --batch_size=32.")
flags.register_validator(
    "learning_rate", lambda v: v is None or 0 < v < 10,
    message="--learning_rate must be a positive number below 10, e.g. --learning_rate=0.001.")
flags.register_validator(
    "train_examples", lambda v: v is None or 0 < v <= 60000,
    message="--train_examples must be between 1 and 60000 (the size of the training split), or left unset.")
flags.register_validator(
    "validation_split", lambda v: 0 <= v < 0.5,
    message="--validation_split must be a fraction from 0 up to (not including) 0.5, e.g. --validation_split=0.1.")
flags.register_validator(
    "early_stopping_patience", lambda v: v >= 0,
    message="--early_stopping_patience must be 0 (off) or a positive number of epochs, e.g. 3.")
flags.register_multi_flags_validator(
    ["early_stopping_patience", "validation_split"],
    lambda v: not v["early_stopping_patience"] or v["validation_split"] > 0,
    message="--early_stopping_patience needs a validation set to watch: add --validation_split=0.1 (for example).")
flags.register_validator(
    "seed", lambda v: v >= 0, message="--seed must be zero or a positive whole number.")


def _well_formed_dir(value):
    if value is None:
        return True
    if not value.strip():
        return False
    return not value.startswith("gs://") or len(value) > len("gs://") and not value[5:].startswith("/")


for _name in ("output_dir", "checkpoint_dir", "tensorboard_dir", "data_dir"):
    flags.register_validator(
        _name, _well_formed_dir,
        message=f"--{_name} must be a local path or gs://BUCKET/PREFIX, e.g. --{_name}=out/run1 "
                f"or --{_name}=gs://my-bucket/fmnist/run1.")
