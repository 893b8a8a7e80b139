"""Fails unless finished runs reached their accuracy floor.

    python -m trainer.check_accuracy RUN_DIR=0.905 ...
    python -m trainer.check_accuracy RUN_DIR,RUN_DIR,RUN_DIR=0.875 ...   # the mean of several seeds' runs

Several runs of one recipe are checked by their mean: a recipe that ends at a constant learning rate (the seed's)
leaves its final test accuracy about half a point of noise from seed to seed, so one run says little about the
recipe (docs/benchmarks.md).
"""

import os
import statistics
import sys

from trainer import outputs
from trainer.errors import UserError


def test_accuracy(run_dir):
    try:
        return outputs.read_metrics(run_dir)["test_accuracy"]
    except UserError as error:
        raise SystemExit(f"check_accuracy: {error}") from None


def check(spec):
    """Checks one `RUN_DIR[,RUN_DIR...]=FLOOR`; prints a line and returns whether it passed."""
    run_dirs, _, floor = spec.rpartition("=")
    if not run_dirs or not floor:
        raise SystemExit(f"check_accuracy: {spec!r} is not RUN_DIR[,RUN_DIR...]=FLOOR, e.g. out/cnn=0.905.")
    run_dirs = run_dirs.split(",")
    floor = float(floor)
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


def main(argv):
    results = [check(spec) for spec in argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
