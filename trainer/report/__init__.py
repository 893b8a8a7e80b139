"""The comparison report of finished runs: `python -m trainer.compare RUN_DIR...` (see `trainer.report.compare`).

`compare` reads the runs and prints the table and McNemar's tests (`stats`, NumPy only); `render` writes the
Markdown and HTML report with `figures` drawn by matplotlib, the `report` extra, which the runtime image lacks:
there `--no-report` prints the table and the tests alone.
"""
