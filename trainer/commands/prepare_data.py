"""Prepares Fashion-MNIST in the TFDS data directory once: `python -m trainer.commands.prepare_data --data_dir=...`.

With `--tfds_manual_dir` TFDS builds the data set from the four official files in that folder, offline. The
trainer's own flags (`trainer.config.flags`), so the same values mean the same folders; exit status as the trainer's.
"""

from absl import flags

import trainer  # noqa: F401
from trainer.commands import cli
from trainer.config import flags as trainer_flags
from trainer.errors import UserError

trainer_flags.define_trainer_flags()
COMMAND = cli.Command("prepare_data", "python -m trainer.commands.prepare_data --data_dir=DIR [--tfds_manual_dir=DIR]",
                      flag_values=flags.FLAGS, help_module=trainer_flags)


def prepare(arguments):
    if arguments:
        raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
    from trainer.training import data
    builder = data.prepare(flags.FLAGS.data_dir, flags.FLAGS.tfds_manual_dir)
    print(f"Fashion-MNIST ready in {builder.data_dir}: "
          f"{builder.info.splits['train'].num_examples} train, {builder.info.splits['test'].num_examples} test.")


def main(argv):
    """The command on `argv` (the program's name first); returns the exit status."""
    return COMMAND.main(prepare, argv)


if __name__ == "__main__":
    COMMAND.run(prepare)
