"""The command line's flags: one absl flag, with its validator, per declared setting (`trainer.config.declare`).

Validators reject bad values while flags are parsed, so a wrong command fails in a second with one line that says
what to do, before TensorFlow is even imported. The trainer's own flags (`define_trainer_flags`) are absl's global
FLAGS, beside absl's logging flags; recipe settings default to None there: "the chosen recipe's value".
"""

from absl import flags

FLAGS = flags.FLAGS

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
           list: flags.DEFINE_multi_string}


def define(declared, flag_values=flags.FLAGS, recipe_field=False, module_name=None):
    """One absl flag, with its validator, for a declared setting (`settings.Declared`); `module_name`: the module
    whose flag it is in absl's help (`module_help`)."""
    help_text = declared.help + (" (default: the recipe's)" if recipe_field else "")
    if declared.env:
        help_text += f" Default: ${declared.env}, when set."
    if declared.choices:
        flags.DEFINE_enum(declared.name, declared.default, declared.choices, help_text, flag_values=flag_values,
                          module_name=module_name)
    else:
        _DEFINE[declared.type](declared.name, declared.default, help_text, flag_values=flag_values,
                               module_name=module_name)
    if declared.check:
        flags.register_validator(declared.name, lambda value, d=declared: d.problem(value) is None,
                                 message=declared.message, flag_values=flag_values)
    if declared.required:
        flags.mark_flag_as_required(declared.name, flag_values=flag_values)


def define_trainer_flags(flag_values=FLAGS):
    """The trainer's flags, the job's settings and the recipe's (`trainer.config.run_config`), defined once.
    (run_config is imported here: every command's `cli` needs `define`, only the trainer's needs run_config.)"""
    from trainer.config import run_config
    if "recipe" in flag_values:
        return
    for declared in run_config.job_settings():
        define(declared, flag_values, module_name=__name__)
    for declared in run_config.recipe_settings():
        define(declared, flag_values, recipe_field=True, module_name=__name__)
    flags.register_multi_flags_validator(
        ["early_stopping_patience", "validation_split"],
        lambda values: run_config.cross_check(values) is None,
        message=run_config.cross_check({"early_stopping_patience": 1, "validation_split": 0}), flag_values=flag_values)
