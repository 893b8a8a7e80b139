"""Entry point of the training job: `python -m trainer.task --model=cnn --output_dir=...` (or `fmnist-train`).

It ends with the exit-code contract of `trainer.errors`: 0 finished; 2 a mistake a retry cannot fix (one line
saying what to do, never a traceback); 75 "retry me" (a rerun resumes from the backup).
"""

import functools

from absl import app

# Only what starts no thread, before `run` blocks the stop signals: a thread inherits its creator's signal mask, and
# one thread left with SIGTERM unblocked takes the signal itself, away from the watcher (resilience/signals.py).
# numpy's OpenBLAS pool starts with `import numpy` (trainer.models, through trainer.config), so the rest of the
# trainer is imported inside `run`.
from trainer.resilience import signals


@functools.cache
def command():
    """The trainer's command line, one per process (its flags are absl's global FLAGS, which `trainer.flags`
    defines on import)."""
    from absl import flags
    from trainer import cli, flags as trainer_flags
    return cli.Command("fmnist-train", "fmnist-train (or python -m trainer.task) --model=cnn --output_dir=PATH "
                       "[flags]", flag_values=flags.FLAGS, help_module=trainer_flags)


def __getattr__(name):
    """`trainer.task.COMMAND`, as every entry point has one (the launcher tests parse their flags with it), built
    on first use: see the imports above."""
    if name == "COMMAND":
        return command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv):
    from absl import flags
    from trainer import config, errors, logs
    from trainer.errors import RetryableError, UserError
    fail = command().fail
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a --flag (see --help).")
    try:
        cfg = config.from_flags(flags.FLAGS)
    except UserError as error:
        fail(str(error))
    logs.configure()
    with logs.quiet_native_startup():  # TensorFlow only once the flags are known to be good
        import tensorflow as tf
        from trainer import distribution, storage, train
        tf.config.list_physical_devices("GPU")
    if distribution.cluster_size(distribution.cluster_spec_from_env()) > 1:
        logs.filter_collective_aborts()  # a lost peer: one line of the job's, not a screen of native ones
    hard = any(storage.is_gcs(path) for path in (cfg.job.checkpoint_dir, cfg.job.output_dir))
    try:
        train.run(cfg)
    except UserError as error:
        fail(str(error), hard=hard)
    except RetryableError as error:  # also a lost peer worker (trainer.resilience.guard)
        fail(str(error), errors.RETRY, hard=hard)
    signals.PROCESS.finished()


def run():
    """Console-script entry point."""
    signals.PROCESS.watch()  # before anything starts a thread: numpy's pool, TensorFlow's
    app.run(main, flags_parser=command().parse)


if __name__ == "__main__":
    run()
