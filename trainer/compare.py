"""`python -m trainer.compare RUN_DIR...`: the comparison report's command, whose name the README, the Makefile and
the image use; the command itself is `trainer.report.compare`."""

import sys

from trainer.report.compare import main

if __name__ == "__main__":
    main(sys.argv)
