"""The exit-code contract every launcher acts on, and the exceptions that map onto it.

| status | meaning | a launcher should |
| 0 | finished: metrics.json is published | - |
| 2 | a mistake a retry cannot fix: bad flag, unusable output location, finished run in the way, bad data | fail the job |
| 75 | retry me: stopped by SIGTERM/SIGINT with a backup saved, lost a peer worker, transient storage error | rerun it |
| 1 | an unexpected crash (a bug): the traceback says where | count it against the retry budget |

`trainer.commands.check_accuracy` adds 3: a run missed its accuracy floor (a check's verdict, not a launcher's).
"""

FINISHED = 0
CRASHED = 1
PERMANENT = 2
MISSED = 3  # check_accuracy: a floor was missed
RETRY = 75  # EX_TEMPFAIL in sysexits.h: "temporary failure, the user is invited to retry"


class UserError(Exception):
    """A problem with the command, its flags, its data or its environment, with a message that says what to do.
    Reported as one line, exit status PERMANENT: rerunning the same command cannot help."""


class RetryableError(Exception):
    """The run stopped for a reason that a rerun of the same command can get past (it resumes from its backup).
    Reported as one line, exit status RETRY."""
