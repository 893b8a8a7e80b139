"""The one shape of every command (`trainer.commands`): its settings as flags, then `main(argv)` -> an exit status.

- Flags are declared once, as settings (`trainer.config.declare`), and become absl flags (`trainer.config.flags`),
  with their checks run while the command line is parsed: a wrong command fails in a second, before TensorFlow is
  even imported.
- `--help` (`-h`, `--helpshort`, `-?`) prints the command's own flags (not absl's or TensorFlow's) and exits 0.
- A bad flag, a missing one, a `UserError`: one line `PROGRAM: error: ...` on stderr, exit status 2 (absl's own
  would be 1, which the contract keeps for crashes); a `RetryableError`: one line, exit status 75
  (trainer/errors.py). `Command.status_of` is the one place where exceptions become exit statuses. Anything else
  is a bug and keeps its traceback.
"""

import os
import sys

from absl import flags, logging

from trainer.config.flags import define
from trainer.monitoring import logs
from trainer.errors import FINISHED, PERMANENT, RETRY, RetryableError, UserError

HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")


def report(program, message, status=PERMANENT):
    """Prints the one-line error of the contract; returns `status`."""
    logging.flush()
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    return status


def fail(program, message, status=PERMANENT, hard=False):
    """The one-line error, then exit with `status` (`hard`: without the interpreter's shutdown, see `leave`)."""
    report(program, message, status)
    leave(status, hard)


def leave(status, hard=False):
    """Exit with `status`, the lines still queued in the log drained first."""
    logs.drain()  # the lines still in the stderr filter of many workers (a no-op without one)
    if hard or "TF_CONFIG" in os.environ or "CLUSTER_SPEC" in os.environ:
        # Under many workers TensorFlow's shutdown waits for the other tasks, which may themselves wait in a
        # collective for this one: leave without it. With the backup on gs://, TensorFlow's Cloud Storage client
        # can abort the shutdown after a stopped run (SIGABRT, "exception not rethrown"): leave without it too.
        sys.stdout.flush()
        os._exit(status)
    sys.exit(status)


class Command:
    """One entry point: its name, its usage line and its settings.

    `flag_values`: where its flags live. The trainer's are absl's global FLAGS
    (`trainer.config.flags.define_trainer_flags` defines them, and absl's own logging flags sit beside them); every
    other command gets flags of its own, defined from `settings` on first use, so that several commands can be parsed
    in one process (the tests do).
    """

    def __init__(self, program, usage, description="", settings=(), flag_values=None, help_module=None):
        self.program, self.usage, self.description = program, usage, description
        self.settings = tuple(settings)
        self.help_module = help_module
        self._flag_values = flag_values

    @property
    def flag_values(self):
        if self._flag_values is None:
            self._flag_values = flags.FlagValues()
            for declared in self.settings:
                define(declared, self._flag_values)
        return self._flag_values

    def values(self):
        """{setting name: parsed value} of this command's settings."""
        return {d.name: self.flag_values[d.name].value for d in self.settings}

    def help(self):
        text = [f"Usage: {self.usage}", ""]
        if self.description:
            text += [self.description.strip(), ""]
        if self.help_module is not None:
            text += [self.flag_values.module_help(self.help_module), "",
                     "(--helpfull adds absl's and TensorFlow's own flags.)"]
        for declared in self.settings:
            flag = self.flag_values[declared.name]
            default = " (required)" if declared.required else (
                f" (default: {flag.default})" if flag.default is not None else "")
            text.append(f"  --{declared.name}: {flag.help}{default}")
        return "\n".join(text).rstrip()

    def fail(self, message, status=PERMANENT, hard=False):
        fail(self.program, message, status, hard)

    def parse(self, argv):
        """absl's parsing, but help exits 0 and a bad flag exits 2 with one line; returns [program, *arguments]
        (the flag parser of `absl.app.run`)."""
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            print(self.help())
            sys.exit(FINISHED)
        try:
            return self.flag_values(argv)
        except flags.Error as error:
            self.fail(str(error))

    def main(self, function, argv):
        """Parses `argv` (program name first), then `function(arguments)` with the arguments that are not flags;
        returns the exit status: function's (None: 0), 2 for a bad flag or a UserError, 75 for a RetryableError.
        """
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            print(self.help())
            return FINISHED
        self.flag_values.unparse_flags()  # a second call in one process starts from the defaults again
        try:
            arguments = self.flag_values(list(argv))[1:]
        except flags.Error as error:
            return report(self.program, str(error))
        return self.status_of(function, arguments)

    def status_of(self, function, *args):
        """`function(*args)`'s exit status: its own (None: 0); 2 for a UserError and 75 for a RetryableError, each
        with its one line. The one place in the job where exceptions become exit statuses."""
        try:
            return function(*args) or FINISHED
        except UserError as error:
            return report(self.program, str(error))
        except RetryableError as error:
            return report(self.program, str(error), RETRY)

    def run(self, function, argv=None):
        """`main` as a process's entry point: exits with its status."""
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # absl's own (logging) flags keep their defaults
        sys.exit(self.main(function, sys.argv if argv is None else argv))
