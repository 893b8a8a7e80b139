"""The trainer's command-line flags: one absl flag, with its validator, per declared setting (`trainer.config`).

Validators reject bad values while flags are parsed, so a wrong command fails in a second with one line that says
what to do, before TensorFlow is even imported. Recipe settings default to None: "the chosen recipe's value".
"""

from absl import flags

from trainer import config

FLAGS = flags.FLAGS

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def _define(declared, recipe_field):
    help_text = declared.help + (" (default: the recipe's)" if recipe_field else "")
    if declared.env:
        help_text += f" Default: ${declared.env}, when set."
    if declared.choices:
        flags.DEFINE_enum(declared.name, declared.default, declared.choices, help_text)
    else:
        _DEFINE[declared.type](declared.name, declared.default, help_text)
    if declared.check:
        flags.register_validator(declared.name, lambda value, d=declared: d.problem(value) is None,
                                 message=declared.message)


for _declared in config.job_settings():
    _define(_declared, recipe_field=False)
for _declared in config.recipe_settings():
    _define(_declared, recipe_field=True)
flags.register_multi_flags_validator(
    ["early_stopping_patience", "validation_split"],
    lambda values: config.cross_check(values) is None,
    message=config.cross_check({"early_stopping_patience": 1, "validation_split": 0}))
