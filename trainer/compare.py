"""`python -m trainer.compare RUN_DIR...`: the comparison report's command (trainer/report/compare.py)."""

import sys

from trainer.report.compare import main

if __name__ == "__main__":
    main(sys.argv)
