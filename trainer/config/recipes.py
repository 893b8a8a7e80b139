"""Training recipes: how a model is trained, apart from what it is.

A recipe fixes epochs, global batch size, optimizer, learning-rate schedule, regularisation, augmentation and the
execution settings that make a step cheap. Every field is a setting (`trainer.config.declare`): any of them can be
overridden from the command line (`--epochs=3`, `--label_smoothing=0`, `--max_shift=1`, ...). A recipe may depend on
the model, so each entry is a function of the model name. The field defaults are the seed notebook's recipe.

- `seed`: the notebook, unchanged (Adam 1e-3, batch 32, 10 epochs, one step per call, TensorFlow's threading).
- `fast`: the same networks to the seed's accuracy in a fraction of its time (docs/benchmarks.md).
- `strong`: the recipe of the `vgg` model: augmentation, label smoothing, AdamW, warm-up + cosine, test-time views.
- `speedrun`: the strong recipe's accuracy in a fraction of its time, on a network of its own (`speedrun`), with
  airbench's tricks (docs/benchmarks.md, "Speedrun").

A recipe that needs a network of its own names it in `OWN_MODELS`: `--recipe=speedrun` alone trains that network,
while `--model` still chooses any registered one (its default stays cnn for every other recipe).
"""

import dataclasses
from typing import Optional

from trainer.config import declare
from trainer.config.declare import setting

DEFAULT = "fast"
SCHEDULES = ("constant", "warmup_cosine", "linear_decay")
OPTIMIZERS = ("adam", "sgd")
# Views of each test image whose predictions are averaged (trainer.training.evaluation.TEST_TIME_VIEWS defines them).
TEST_TIME_AUGMENTATIONS = ("none", "flip", "flip_shift", "flip_grid")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random changes to each training image; all off by default."""
    max_shift: int = setting(
        0, "Augmentation: translate each training image by up to this many pixels in x and y (0: off).",
        check=lambda v: 0 <= v <= 13, message="--max_shift must be a whole number of pixels from 0 to 13.")
    horizontal_flip: bool = setting(False, "Augmentation: mirror half of the training images left-right.")
    alternating_flip: bool = setting(
        False, "Augmentation: mirror each training image on every other epoch (the first epoch a random half, "
               "then each image the opposite way round from the epoch before; airbench's alternating flip), "
               "instead of --horizontal_flip's fresh draw every epoch.")
    erasing_probability: float = setting(
        0.0, "Augmentation: the share of training images in which one random rectangle is set to noise "
             "(random erasing, Zhong et al. 2017).",
        check=lambda v: 0 <= v <= 1, message="--erasing_probability must be a probability from 0 to 1.")

    @property
    def enabled(self):
        return bool(self.max_shift or self.horizontal_flip or self.alternating_flip or self.erasing_probability)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str = "seed"
    epochs: int = setting(10, "Training epochs.", check=lambda v: v > 0,
                          message="--epochs must be a positive whole number, e.g. --epochs=10.")
    batch_size: int = setting(32, "Global batch size, split across all replicas.", check=lambda v: v > 0,
                              message="--batch_size must be a positive whole number, e.g. --batch_size=32.")
    learning_rate: float = setting(
        1e-3, "Peak learning rate.", check=lambda v: 0 < v < 10,
        message="--learning_rate must be a positive number below 10, e.g. --learning_rate=0.001.")
    schedule: str = setting(
        "constant", "Learning rate over time: constant; warmup_cosine (linear warm-up, then cosine decay to 0); "
                    "linear_decay (linear warm-up, then a straight line down to 0).", choices=SCHEDULES)
    warmup_epochs: float = setting(0.0, "Epochs of linear learning-rate warm-up.", check=lambda v: v >= 0,
                                   message="--warmup_epochs must be zero or a positive number of epochs.")
    optimizer: str = setting("adam", "adam, or sgd (Nesterov momentum 0.9).", choices=OPTIMIZERS)
    bias_learning_rate_factor: float = setting(
        1.0, "With --optimizer=sgd: biases and batch normalization's shifts learn this many times faster than the "
             "kernels (airbench's separate learning rate for biases).", check=lambda v: 0 < v <= 1000,
        message="--bias_learning_rate_factor must be a positive number up to 1000, e.g. 8.")
    weight_decay: float = setting(
        0.0, "Decoupled weight decay (AdamW-style) of kernels: each step shrinks them by learning rate x this.",
        check=lambda v: 0 <= v < 1, message="--weight_decay must be a number from 0 up to (not including) 1.")
    label_smoothing: float = setting(
        0.0, "Label smoothing of the cross-entropy target.", check=lambda v: 0 <= v < 1,
        message="--label_smoothing must be a number from 0 up to (not including) 1, e.g. 0.1.")
    ema_momentum: float = setting(
        0.0, "Keep an exponential moving average of the trainable weights, each step average = this x average + "
             "(1 - this) x weights (0: off); the test scores and the SavedModel use the average. The average is "
             "training state: the preemption backup holds it.", check=lambda v: 0 <= v < 1,
        message="--ema_momentum must be a number from 0 up to (not including) 1, e.g. 0.99.")
    augmentation: Augmentation = Augmentation()
    test_time_augmentation: str = setting(
        "none", "Average each test image's predictions over views of it: none, flip (and its mirror image), "
                "flip_shift (+ four one-pixel shifts), flip_grid (the image and its mirror, each at the nine "
                "positions of a one-pixel grid: 18 views). The exported SavedModel does the same.",
        choices=TEST_TIME_AUGMENTATIONS)
    steps_per_execution: int = setting(
        1, "Batches run per call into the compiled train function: fewer Python round trips for small models.",
        check=lambda v: v > 0, message="--steps_per_execution must be a positive whole number, e.g. 64.")
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    mixed_precision: bool = setting(
        False, "Train in mixed precision (16-bit compute, float32 weights) where the hardware computes bfloat16 "
               "natively; float32 elsewhere. --precision decides in the end.")
    threads_per_op: Optional[int] = setting(
        None, "Threads per op (TensorFlow's intra-op pool; unset: all cores). Single-process runs only.",
        check=lambda v: v > 0, message="--threads_per_op must be a positive whole number, e.g. 1.")

    def with_overrides(self, **changes):
        """The recipe with every setting in `changes` that is not None replaced (augmentation fields included)."""
        paths = {d.name: d.path for d in declare.declared(Recipe)}
        return declare.replace(self, {paths[name]: value for name, value in changes.items() if value is not None})


def _seed(model_name):
    """The notebook's recipe, unchanged: Adam at Keras's default 1e-3, batch 32, 10 epochs."""
    del model_name
    return Recipe(name="seed")


def _fast(model_name):
    """The seed's accuracy in a fraction of its time, for the same network (docs/benchmarks.md, "Fast training")."""
    if model_name == "mlp":  # one thread per op: the tiny MLP's ops are too small to split
        return Recipe(name="fast", epochs=5, batch_size=128, learning_rate=2e-3, schedule="linear_decay",
                      label_smoothing=0.1, steps_per_execution=64, threads_per_op=1, mixed_precision=True)
    return Recipe(name="fast", epochs=5, batch_size=128, learning_rate=3e-3, schedule="linear_decay",
                  label_smoothing=0.1, steps_per_execution=64, mixed_precision=True)


def _strong(model_name):
    """The `vgg` model's recipe, tuned on --validation_split=0.1 (docs/benchmarks.md, "The strong model").

    18 epochs fit ten minutes of training in mixed bfloat16 on the benchmark CPU; on hardware without native
    bfloat16 they take longer: pass --epochs=12 to keep the time.
    """
    del model_name
    return Recipe(name="strong", epochs=18, batch_size=128, learning_rate=4e-3, schedule="warmup_cosine",
                  warmup_epochs=1.0, weight_decay=0.05, label_smoothing=0.1,
                  augmentation=Augmentation(max_shift=2, horizontal_flip=True, erasing_probability=0.25),
                  test_time_augmentation="flip_shift", steps_per_execution=32, mixed_precision=True)


def _speedrun(model_name):
    """The strong recipe's accuracy in a fraction of its time (docs/benchmarks.md, "Speedrun"): the `speedrun`
    network, Nesterov SGD at batch 256 with faster biases, label smoothing 0.05, one-pixel shifts and alternating
    flip, the 18 test-time views of flip_grid (issue 28: 0.1 and 18 views over 0.2 and 6, +0.3 points over 5
    seeds; then label smoothing 0.05 and shifts of 1 pixel instead of 0.1 and 2)."""
    del model_name
    return Recipe(name="speedrun", epochs=8, batch_size=256, learning_rate=0.4, schedule="linear_decay",
                  warmup_epochs=1.0, optimizer="sgd", bias_learning_rate_factor=4.0, weight_decay=5e-4,
                  label_smoothing=0.05, augmentation=Augmentation(max_shift=1, alternating_flip=True),
                  test_time_augmentation="flip_grid", steps_per_execution=32, mixed_precision=True)


_RECIPES = {"seed": _seed, "fast": _fast, "strong": _strong, "speedrun": _speedrun}
# The network a recipe trains when --model is not given; recipes not named here train the flag's default.
OWN_MODELS = {"speedrun": "speedrun"}


def names():
    return sorted(_RECIPES)


def own_model(name):
    """The registered model `--recipe=name` trains when no --model is given, or None (the flag's default)."""
    return OWN_MODELS.get(name)


def get(name: str, model_name: str) -> Recipe:
    return _RECIPES[name](model_name)
