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
    except UserError as error:
        _fail(str(error))
    from trainer import train  # imports TensorFlow: only once the flags are known to be good
    import tensorflow as tf
    try:
        train.run(cfg)
    except UserError as error:
        _fail(str(error))
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        # A peer worker died (preempted, evicted, crashed): every worker's collectives abort. Rerunning the job
        # resumes from the last backup, so say that rather than dump a stack of collective-op frames.
        first_line = str(error).strip().splitlines()[-3 if len(str(error).splitlines()) > 2 else 0][:300]
        _fail(f"lost contact with another worker ({type(error).__name__}: {first_line}). "
              f"The job stopped; rerun every worker with the same flags to resume from the last backup in "
              f"{cfg.checkpoint_dir}.", status=1)


def _fail(message, status=2):
    logging.flush()
    print(f"fmnist-train: error: {message}", file=sys.stderr)
    sys.exit(status)


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
