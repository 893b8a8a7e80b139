"""Prepares Fashion-MNIST in the TFDS data directory once: `python -m trainer.prepare_data --data_dir=...`.

With `--tfds_manual_dir` TFDS builds the data set from the four official files in that folder, offline. The
trainer's own flags (trainer/flags.py), so the same values mean the same folders; exit status as the trainer's.
"""

from absl import app, flags

import trainer  # noqa: F401
from trainer import cli, flags as trainer_flags
from trainer.errors import RETRY, RetryableError, UserError

COMMAND = cli.Command("prepare_data", "python -m trainer.prepare_data --data_dir=DIR [--tfds_manual_dir=DIR]",
                      flag_values=flags.FLAGS, help_module=trainer_flags)


def main(argv):
    if len(argv) > 1:
        COMMAND.fail(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a --flag (see --help).")
    from trainer import data
    try:
        builder = data.prepare(flags.FLAGS.data_dir, flags.FLAGS.tfds_manual_dir)
    except UserError as error:
        COMMAND.fail(str(error))
    except RetryableError as error:
        COMMAND.fail(str(error), RETRY)
    print(f"Fashion-MNIST ready in {builder.data_dir}: "
          f"{builder.info.splits['train'].num_examples} train, {builder.info.splits['test'].num_examples} test.")


if __name__ == "__main__":
    app.run(main, flags_parser=COMMAND.parse)
