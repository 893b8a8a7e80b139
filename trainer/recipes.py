"""Training recipes: how a model is trained, apart from what it is.

A recipe fixes epochs, global batch size, optimizer settings and learning-rate schedule. A recipe may depend on
the model (a small MLP and a CNN need not share a schedule), so each entry is a function of the model name.
`--epochs`, `--batch_size` and `--learning_rate` override the recipe's values.
"""

import dataclasses

DEFAULT = "seed"


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    # "constant": the learning rate throughout; "warmup_cosine": linear warm-up, then cosine decay to zero.
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    # Batches run per call into the compiled train function: fewer Python round trips for small models.
    steps_per_execution: int = 1
    jit_compile: bool = False

    def with_overrides(self, epochs=None, batch_size=None, learning_rate=None):
        changes = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate).items()
                   if v is not None}
        return dataclasses.replace(self, **changes)


def _seed(model_name):
    """The notebook's recipe, unchanged: Adam at Keras's default 1e-3, batch 32, 10 epochs."""
    del model_name
    return Recipe(name="seed", epochs=10, batch_size=32, learning_rate=1e-3)


_RECIPES = {"seed": _seed}


def names():
    return sorted(_RECIPES)


def get(name: str, model_name: str) -> Recipe:
    return _RECIPES[name](model_name)
