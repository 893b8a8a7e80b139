"""The trainer's command-line flags: one absl flag, with its validator, per declared setting (`trainer.config`).

Validators reject bad values while flags are parsed, so a wrong command fails in a second with one line that says
what to do, before TensorFlow is even imported. Recipe settings default to None: "the chosen recipe's value".
"""

from absl import flags

from trainer import cli, config

FLAGS = flags.FLAGS

for _declared in config.job_settings():
    cli.define(_declared, FLAGS, module_name=__name__)
for _declared in config.recipe_settings():
    cli.define(_declared, FLAGS, recipe_field=True, module_name=__name__)
flags.register_multi_flags_validator(
    ["early_stopping_patience", "validation_split"],
    lambda values: config.cross_check(values) is None,
    message=config.cross_check({"early_stopping_patience": 1, "validation_split": 0}))
