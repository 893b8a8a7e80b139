"""The training job: `python -m trainer.task --model=cnn --output_dir=...` (console script `fmnist-train`).

It ends with the exit-code contract of `trainer.errors`: 0 finished; 2 a mistake a retry cannot fix (one line
saying what to do, never a traceback); 75 "retry me" (a rerun resumes from the backup).
"""

import functools

from absl import app

# Only what starts no thread, before `run` blocks the stop signals: a thread inherits its creator's signal mask, and one
# thread left with SIGTERM unblocked takes the signal itself, away from the watcher (resilience/signals.py). numpy's
# OpenBLAS pool starts with `import numpy` (trainer.training.models, through trainer.config.run_config), so the rest of
# the trainer is imported inside `run`.
from trainer.resilience import signals


@functools.cache
def command():
    """The trainer's command line, one per process (its flags are absl's global FLAGS)."""
    from absl import flags
    from trainer.commands import cli
    from trainer.config import flags as trainer_flags
    trainer_flags.define_trainer_flags()
    return cli.Command("fmnist-train", "fmnist-train (or python -m trainer.task) --model=cnn --output_dir=PATH "
                       "[flags]", flag_values=flags.FLAGS, help_module=trainer_flags)


def __getattr__(name):
    """`COMMAND`, as every command has one (the launcher tests parse their flags with it), built on first use: see
    the imports above."""
    if name == "COMMAND":
        return command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Training:
    """The run behind the command line; `hard`: leave without the interpreter's shutdown (`cli.leave`)."""

    hard = False

    def __call__(self, arguments):
        from absl import flags
        from trainer.config import run_config
        from trainer.errors import UserError
        from trainer.monitoring import logs
        if arguments:
            raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
        cfg = run_config.from_flags(flags.FLAGS)
        logs.configure()
        with logs.quiet_native_startup():  # TensorFlow only once the flags are known to be good
            import tensorflow as tf
            from trainer import storage
            from trainer.training import distribution, train
            tf.config.list_physical_devices("GPU")
        if distribution.cluster_size(distribution.cluster_spec_from_env()) > 1:
            logs.filter_collective_aborts()  # a lost peer: one line of the job's, not a screen of native ones
        self.hard = any(storage.is_gcs(path) for path in (cfg.job.checkpoint_dir, cfg.job.output_dir))
        train.run(cfg)  # a lost peer worker is a RetryableError too (trainer.resilience.guard)


def main(argv):
    """absl's main: the run, then the contract's exit status."""
    from trainer.commands import cli
    training = Training()
    status = command().status_of(training, argv[1:])
    if status:
        cli.leave(status, hard=training.hard)
    signals.PROCESS.finished()


def run():
    """Console-script entry point."""
    signals.PROCESS.watch()  # before anything starts a thread: numpy's pool, TensorFlow's
    app.run(main, flags_parser=command().parse)


if __name__ == "__main__":
    run()
