"""Entry point of the training job: `python -m trainer.task --model=cnn --output_dir=...` (or `fmnist-train`).

It ends with the exit-code contract of `trainer.errors`: 0 finished; 2 a mistake a retry cannot fix (one line
saying what to do, never a traceback); 75 "retry me" (a rerun resumes from the backup).
"""

from absl import app, flags

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer import cli, config, errors, flags as trainer_flags, logs
from trainer.resilience import signals
from trainer.errors import RetryableError, UserError

FLAGS = flags.FLAGS
# The trainer's flags are absl's global FLAGS (trainer/flags.py), beside absl's own logging flags.
COMMAND = cli.Command("fmnist-train", "fmnist-train (or python -m trainer.task) --model=cnn --output_dir=PATH [flags]",
                      flag_values=FLAGS, help_module=trainer_flags)
_fail = COMMAND.fail
parse_flags = COMMAND.parse


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
        from trainer import distribution, train
        tf.config.list_physical_devices("GPU")
    if distribution.cluster_size(distribution.cluster_spec_from_env()) > 1:
        logs.filter_collective_aborts()  # a lost peer: one line of the job's, not a screen of native ones
    try:
        train.run(cfg)
    except UserError as error:
        _fail(str(error))
    except RetryableError as error:  # also a lost peer worker (trainer.resilience.guard)
        _fail(str(error), errors.RETRY)


def run():
    """Console-script entry point."""
    signals.PROCESS.watch()  # before TensorFlow starts any thread
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
