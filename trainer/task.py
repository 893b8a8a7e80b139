"""Entry point of the training job: `python -m trainer.task --model=cnn --output_dir=...` (or `fmnist-train`).

Mistakes a user can fix (a bad flag, an unusable output location, a finished run in the way) end the process
with exit status 2 and one line saying what to do, never a traceback.
"""

import sys

from absl import app, flags, logging

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer import config, flags as trainer_flags  # noqa: F401  (defines the flags)
from trainer.errors import UserError

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a --flag (see --helpshort).")
    try:
        cfg = config.from_flags(FLAGS)
        from trainer import train  # imports TensorFlow: after the flags are known to be good
        train.run(cfg)
    except UserError as error:
        _fail(str(error))


def _fail(message):
    logging.flush()
    print(f"fmnist-train: error: {message}", file=sys.stderr)
    sys.exit(2)


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
