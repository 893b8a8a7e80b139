"""Fails unless finished runs reached their accuracy floor: `python -m trainer.check_accuracy RUN_DIR=0.905 ...`."""

import json
import os
import sys


def main(argv):
    failures = 0
    for spec in argv[1:]:
        run_dir, _, floor = spec.rpartition("=")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            accuracy = json.load(f)["test_accuracy"]
        ok = accuracy >= float(floor)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {run_dir}: test accuracy {accuracy:.4f} (floor {float(floor):.3f})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
