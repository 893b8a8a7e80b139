"""Entry point of the training job: `python -m trainer.task --model=cnn --output_dir=...` (or `fmnist-train`).

It ends with the exit-code contract of `trainer.errors`: 0 finished; 2 a mistake a retry cannot fix (one line
saying what to do, never a traceback); 75 "retry me" (a rerun resumes from the backup).
"""

import os
import sys

from absl import app, flags, logging

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer import config, errors, flags as trainer_flags, logs
from trainer.resilience import signals
from trainer.errors import RetryableError, UserError

FLAGS = flags.FLAGS
HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a --flag (see --help).")
    try:
        cfg = config.from_flags(FLAGS)
    except UserError as error:
        _fail(str(error))
    logs.configure()
    with logs.quiet_native_startup():  # TensorFlow only once the flags are known to be good
        import tensorflow as tf
        from trainer import train
        tf.config.list_physical_devices("GPU")
    try:
        train.run(cfg)
    except UserError as error:
        _fail(str(error))
    except RetryableError as error:  # also a lost peer worker (trainer.resilience.guard)
        _fail(str(error), errors.RETRY)


def _fail(message, status=errors.PERMANENT):
    logging.flush()
    print(f"fmnist-train: error: {message}", file=sys.stderr, flush=True)
    if "TF_CONFIG" in os.environ or "CLUSTER_SPEC" in os.environ:
        # Under many workers TensorFlow's shutdown waits for the other tasks, which may themselves wait in a
        # collective for this one: leave without it.
        os._exit(status)
    sys.exit(status)


def parse_flags(argv):
    """absl's flag parsing, but `--help`/`--helpshort` list the trainer's own flags (absl's would list the flags of
    the console script, none) and exit 0, and a bad flag exits with the contract's permanent status."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(f"Usage: fmnist-train (or python -m trainer.task) --model=cnn --output_dir=PATH [flags]\n\n"
              f"{FLAGS.module_help(trainer_flags)}\n\n(--helpfull adds absl's and TensorFlow's own flags.)")
        sys.exit(errors.FINISHED)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(str(error))


def run():
    """Console-script entry point."""
    signals.PROCESS.watch()  # before TensorFlow starts any thread
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
