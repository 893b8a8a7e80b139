"""How a setting is declared: once, as a dataclass field that carries its help text and its check.

`trainer.config.run_config.Job` (what to train, where the data and outputs are) and `trainer.config.recipes.Recipe` (how
it is trained) are made of such fields. Everything else derives from them: the absl flags and their validators
(`trainer.config.flags`), the recipe overrides, metrics.json's `flags` and `recipe_settings`, and the README's flag
tables (`python -m trainer.config.tables` prints them; a test fails when the README differs).
"""

import dataclasses
import typing
from typing import Any, Callable, Optional, Tuple, Union


def setting(default, help, *, check=None, message=None, choices=None, env=None, required=False, flag=None):
    """A declared setting. `check(value) -> bool` runs on every value but None; `message` says what to do when it
    fails. `choices`: the allowed values (or a function returning them). `env`: an environment variable a launcher
    sets, used when the flag is not given. `required`: the command cannot run without it. `flag`: the flag's name
    where it is not the field's (`--no-report`). A field typed `list` is a flag that may be repeated."""
    return dataclasses.field(default=default, metadata={
        "help": help, "check": check, "message": message, "choices": choices, "env": env, "required": required,
        "flag": flag})


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting as the command line sees it."""
    name: str
    type: type                 # str, int, float or bool
    default: Any               # the flag's default (None for recipe fields: "the recipe's value")
    help: str
    path: Tuple[str, ...]      # where it lives in its dataclass: ("epochs",) or ("augmentation", "max_shift")
    check: Optional[Callable[[Any], bool]] = None
    message: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    env: Optional[str] = None
    required: bool = False

    def problem(self, value):
        """None when `value` is acceptable, else the message that says what to do."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"--{self.name}={value} is not one of {', '.join(self.choices)}."
        if self.check is not None and not self.check(value):
            return self.message
        return None


def declared(cls, flag_default=dataclasses.MISSING, prefix=()):
    """The settings of a dataclass, nested dataclasses flattened (their fields' names must be unique)."""
    result = []
    for field in dataclasses.fields(cls):
        kind = _plain_type(field.type)
        if dataclasses.is_dataclass(kind):
            result += declared(kind, flag_default, prefix + (field.name,))
            continue
        if "help" not in field.metadata:
            continue  # not a setting (e.g. a recipe's name, chosen by --recipe)
        choices = field.metadata["choices"]
        result.append(Declared(
            name=field.metadata.get("flag") or field.name, type=kind, path=prefix + (field.name,),
            default=field.default if flag_default is dataclasses.MISSING else flag_default,
            help=field.metadata["help"], check=field.metadata["check"], message=field.metadata["message"],
            choices=tuple(choices() if callable(choices) else choices) if choices else None,
            env=field.metadata["env"], required=field.metadata.get("required", False)))
    return result


def _plain_type(annotation):
    """Optional[int] -> int."""
    if typing.get_origin(annotation) is Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def replace(instance, path_values):
    """A copy of a (nested) frozen dataclass with {path: value} replaced."""
    own, nested = {}, {}
    for path, value in path_values.items():
        if len(path) == 1:
            own[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, changes in nested.items():
        own[name] = replace(getattr(instance, name), changes)
    return dataclasses.replace(instance, **own)
