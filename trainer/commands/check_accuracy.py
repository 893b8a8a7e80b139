"""Fails unless finished runs reached their accuracy floor.

    python -m trainer.commands.check_accuracy RUN_DIR=0.905 ...
    python -m trainer.commands.check_accuracy RUN_DIR,RUN_DIR,RUN_DIR=0.875 ...   # the mean of several seeds' runs

Several runs of one recipe are checked by their mean: a recipe that ends at a constant learning rate (the seed's)
leaves its final test accuracy about half a point of noise from seed to seed, so one run says little about the
recipe (docs/benchmarks.md).

Exit status: 0 every floor reached; 3 one was missed (`errors.MISSED`: not 1, which the contract keeps for a
crash); 2 a mistake (an unfinished run, a malformed argument).
"""

import os
import statistics
import sys

from trainer.commands import cli
from trainer.storage import outputs
from trainer.errors import MISSED, UserError

COMMAND = cli.Command("check_accuracy", "python -m trainer.commands.check_accuracy RUN_DIR[,RUN_DIR...]=FLOOR ...",
                      description=__doc__.split("\n\n", 1)[1])


def test_accuracy(run_dir):
    return outputs.read_metrics(run_dir)["test_accuracy"]


def check(spec):
    """Checks one `RUN_DIR[,RUN_DIR...]=FLOOR`; prints a line and returns whether it passed."""
    run_dirs, _, floor = spec.rpartition("=")
    if not run_dirs or not floor:
        raise UserError(f"{spec!r} is not RUN_DIR[,RUN_DIR...]=FLOOR, e.g. out/cnn=0.905.")
    run_dirs = run_dirs.split(",")
    try:
        floor = float(floor)
    except ValueError:
        raise UserError(f"{spec!r}: the floor {floor!r} is not a number, e.g. out/cnn=0.905.") from None
    accuracies = [test_accuracy(run_dir) for run_dir in run_dirs]
    mean = statistics.mean(accuracies)
    ok = mean >= floor
    if len(run_dirs) == 1:
        print(f"{'ok  ' if ok else 'FAIL'} {run_dirs[0]}: test accuracy {mean:.4f} (floor {floor:.3f})")
    else:
        each = ", ".join(f"{os.path.basename(os.path.normpath(d))} {a:.4f}" for d, a in zip(run_dirs, accuracies))
        print(f"{'ok  ' if ok else 'FAIL'} mean test accuracy {mean:.4f} ± {statistics.stdev(accuracies):.4f} "
              f"over {len(run_dirs)} runs (floor {floor:.3f}): {each}")
    return ok


def check_all(specs):
    if not specs:
        raise UserError("nothing to check: give RUN_DIR[,RUN_DIR...]=FLOOR, e.g. out/cnn=0.905.")
    results = [check(spec) for spec in specs]
    return 0 if all(results) else MISSED


def main(argv):
    """The command on `argv` (the program's name first); returns the exit status."""
    return COMMAND.main(check_all, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
