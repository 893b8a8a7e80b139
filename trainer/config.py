"""One run's settings: the flags, completed from the launcher's environment and the chosen recipe.

Precedence, highest first: an explicit flag, Vertex AI's environment (`AIP_MODEL_DIR`, `AIP_CHECKPOINT_DIR`,
`AIP_TENSORBOARD_LOG_DIR`), the recipe, then the defaults below. The same image and flags therefore work under
docker, Kubernetes and Vertex AI.
"""

import dataclasses
import os
from typing import Optional

from trainer import models, recipes
from trainer.errors import UserError
from trainer.outputs import is_gcs


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: str
    recipe: recipes.Recipe
    precision: str                  # --precision: "auto" (the recipe and the hardware decide) or a Keras policy
    strategy: str
    output_dir: str
    checkpoint_dir: Optional[str]   # None: the run stages a default (see train.py)
    tensorboard_dir: Optional[str]  # None: logs go to <output_dir>/logs
    data_dir: Optional[str]
    tfds_manual_dir: Optional[str]
    train_examples: Optional[int]
    validation_split: float
    early_stopping_patience: int
    seed: int
    overwrite: bool
    flags: dict

    @property
    def input_shape(self):
        return models.get(self.model).input_shape


def from_flags(flag_values, environ=None):
    environ = os.environ if environ is None else environ
    output_dir = flag_values.output_dir or environ.get("AIP_MODEL_DIR")
    if not output_dir:
        raise UserError("no output location: pass --output_dir=PATH (a folder or gs://bucket/prefix), "
                        "or set AIP_MODEL_DIR.")
    manual_dir = flag_values.tfds_manual_dir
    if manual_dir and not os.path.isdir(manual_dir):
        raise UserError(f"--tfds_manual_dir={manual_dir} is not a folder: point it at the folder holding the four "
                        "Fashion-MNIST .gz files, or leave it out to download them.")
    checkpoint_dir = flag_values.checkpoint_dir or environ.get("AIP_CHECKPOINT_DIR")
    if checkpoint_dir is None and not is_gcs(output_dir):
        checkpoint_dir = os.path.join(os.path.abspath(output_dir), "checkpoints")
    if checkpoint_dir is None:
        checkpoint_dir = output_dir.rstrip("/") + "/checkpoints"
    recipe = recipes.get(flag_values.recipe, flag_values.model).with_overrides(
        epochs=flag_values.epochs, batch_size=flag_values.batch_size, learning_rate=flag_values.learning_rate)
    return RunConfig(
        model=flag_values.model,
        recipe=recipe,
        precision=flag_values.precision,
        strategy=flag_values.strategy,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        tensorboard_dir=flag_values.tensorboard_dir or environ.get("AIP_TENSORBOARD_LOG_DIR"),
        data_dir=flag_values.data_dir,
        tfds_manual_dir=manual_dir,
        train_examples=flag_values.train_examples,
        validation_split=flag_values.validation_split,
        early_stopping_patience=flag_values.early_stopping_patience,
        seed=flag_values.seed,
        overwrite=flag_values.overwrite,
        flags={name: flag_values[name].value for name in _OWN_FLAGS},
    )


_OWN_FLAGS = ("model", "recipe", "epochs", "batch_size", "learning_rate", "precision", "strategy", "output_dir",
              "checkpoint_dir", "tensorboard_dir", "data_dir", "tfds_manual_dir", "train_examples", "validation_split",
              "early_stopping_patience", "seed", "overwrite")
