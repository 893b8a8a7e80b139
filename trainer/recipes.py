"""Training recipes: how a model is trained, apart from what it is.

A recipe fixes epochs, global batch size, optimizer, learning-rate schedule, regularisation, augmentation and the
execution settings that make a step cheap. A recipe may depend on the model (a small MLP and a CNN need not share a
schedule), so each entry is a function of the model name. `--epochs`, `--batch_size` and `--learning_rate`
override the recipe's values.

- `seed`: the notebook, unchanged (Adam 1e-3, batch 32, 10 epochs, one step per call, TensorFlow's threading).
- `fast`: the same networks to the seed's accuracy in a fraction of its time (docs/benchmarks.md says what each
  setting buys): a larger batch with a matched learning rate, annealed to zero, label smoothing, many steps per
  call, mixed bfloat16 where the hardware has it and, for the tiny MLP, single-threaded ops.
- `strong`: the recipe of the `vgg` model: augmentation, label smoothing, AdamW, warm-up + cosine, mixed
  bfloat16 where the hardware has it, test-time views.
"""

import dataclasses
from typing import Optional

DEFAULT = "fast"


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random changes to each training image; all off by default."""
    max_shift: int = 0          # translate by up to this many pixels in x and y (the border is filled with 0)
    horizontal_flip: bool = False
    erasing_probability: float = 0.0  # random erasing (Zhong et al. 2017): one rectangle set to noise

    @property
    def enabled(self):
        return bool(self.max_shift or self.horizontal_flip or self.erasing_probability)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    # "constant": the learning rate throughout; "warmup_cosine": linear warm-up, then cosine decay to zero;
    # "linear_decay": linear warm-up (if any), then a straight line down to zero (a one-cycle without momentum).
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    optimizer: str = "adam"        # "adam", or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 0.0      # decoupled weight decay (AdamW-style) of either optimizer
    label_smoothing: float = 0.0
    augmentation: Augmentation = Augmentation()
    # Average each test image's predictions over views of it: "none", "flip" (and its mirror image), "flip_shift"
    # (+ four one-pixel shifts); trainer/evaluate.py. The exported SavedModel does the same.
    test_time_augmentation: str = "none"
    # Batches run per call into the compiled train function: fewer Python round trips for small models.
    steps_per_execution: int = 1
    jit_compile: bool = False
    # Train in mixed precision (16-bit compute, float32 weights) where the hardware computes bfloat16 natively;
    # float32 elsewhere (trainer/precision.py). --precision overrides.
    mixed_precision: bool = False
    # Threads per op (TensorFlow's intra-op pool); None: TensorFlow's default (all cores). A tiny model's ops are
    # too small to split, and one thread per op saves the hand-offs. Applied in single-process runs only.
    threads_per_op: Optional[int] = None

    def with_overrides(self, epochs=None, batch_size=None, learning_rate=None):
        changes = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate).items()
                   if v is not None}
        return dataclasses.replace(self, **changes)


def _seed(model_name):
    """The notebook's recipe, unchanged: Adam at Keras's default 1e-3, batch 32, 10 epochs."""
    del model_name
    return Recipe(name="seed", epochs=10, batch_size=32, learning_rate=1e-3)


def _fast(model_name):
    """The seed's accuracy in a fraction of its time, for the same network (see docs/benchmarks.md)."""
    if model_name == "mlp":
        return Recipe(name="fast", epochs=5, batch_size=128, learning_rate=2e-3, schedule="linear_decay",
                      label_smoothing=0.1, steps_per_execution=64, threads_per_op=1, mixed_precision=True)
    return Recipe(name="fast", epochs=5, batch_size=128, learning_rate=3e-3, schedule="linear_decay",
                  label_smoothing=0.1, steps_per_execution=64, mixed_precision=True)


def _strong(model_name):
    """Augmentation and a warm-up + cosine schedule: for the `vgg` model (any model can use it).

    Tuned on `--validation_split=0.1` (docs/benchmarks.md): erasing probability 0.5 -> 0.25 and weight decay
    0.01 -> 0.05 each gained a little validation accuracy; SGD with Nesterov momentum did no better than Adam.
    Mixed bfloat16 made an epoch 1.4x cheaper on the benchmark CPU, which bought 18 epochs instead of 12 in the
    same ten minutes: an epoch takes 27-35 s there depending on the day, and 18 keep a margin that 20 did not (one
    20-epoch run took 615 s); averaging over six test-time views beat the flip alone on the validation split.
    Weight decay shrinks kernels only, not batch normalization's scales and shifts or biases (train.optimizer):
    a lower validation loss at the same accuracy, like the `vgg` model's flattened head.
    On hardware without native bfloat16 the 18 epochs take longer: pass --epochs=12 to keep the time.
    """
    del model_name
    return Recipe(name="strong", epochs=18, batch_size=128, learning_rate=4e-3, schedule="warmup_cosine",
                  warmup_epochs=1.0, weight_decay=0.05, label_smoothing=0.1,
                  augmentation=Augmentation(max_shift=2, horizontal_flip=True, erasing_probability=0.25),
                  test_time_augmentation="flip_shift", steps_per_execution=32, mixed_precision=True)


_RECIPES = {"seed": _seed, "fast": _fast, "strong": _strong}


def names():
    return sorted(_RECIPES)


def get(name: str, model_name: str) -> Recipe:
    return _RECIPES[name](model_name)
