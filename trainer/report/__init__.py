"""The comparison report of finished runs: `python -m trainer.commands.compare RUN_DIR...` (see
`trainer.report.comparison`).

`compare` reads the runs and prints the table and McNemar's tests (`stats`, with scipy); `render` writes the
Markdown and HTML report with `figures` drawn by matplotlib. matplotlib and scipy are the `report` extra, which the
runtime image lacks: there `--no-report` prints the table alone (one run needs no test; for pairs it says how to
get the tests).
"""
