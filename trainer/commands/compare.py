"""Comparison of finished runs: `python -m trainer.commands.compare RUN_DIR... [--out REPORT_DIR] [--names a,b]`.

RUN_DIR is a local folder or a gs://bucket/prefix holding a finished run (metrics.json and test_predictions.npz).
The command prints one table row per run and McNemar's test for every pair of runs, then writes the report:
REPORT_DIR/report.md with its PNG figures beside it, and REPORT_DIR/report.html, one self-contained file (figures
embedded, no external reference). Default REPORT_DIR: the runs' common parent folder + /report (`out/report` for
`make run`), or `out/report` when a run is in Cloud Storage.

Mistakes (an unfinished run, missing test predictions, runs evaluated on different test sets, a bad flag) end the
command with one line on stderr and exit status 2, never a traceback.
"""

import dataclasses
import sys
import tempfile
from typing import Optional

from trainer import storage
from trainer.commands import cli
from trainer.config import declare
from trainer.config.declare import setting
from trainer.errors import UserError
from trainer.report import stats
from trainer.report.comparison import INSTALL_REPORT_EXTRA, default_names, default_report_dir, read_runs, text_table


@dataclasses.dataclass(frozen=True)
class Settings:
    """python -m trainer.commands.compare's flags (the runs are its arguments)."""
    out: Optional[str] = setting(None, "Local folder for report.md, its figures and report.html (default: the runs' "
                                       "common parent + /report; out/report for gs:// runs).")
    names: Optional[str] = setting(None, "Comma-separated labels for the runs, in order (default: folder names).")
    no_report: bool = setting(False, "Print the table and the tests only.", flag="no-report")


COMMAND = cli.Command("compare", "python -m trainer.commands.compare RUN_DIR... [--out REPORT_DIR] [--names a,b] "
                                 "[--no-report]", description=__doc__.split("\n\n", 1)[1],
                      settings=declare.declared(Settings))


@dataclasses.dataclass(frozen=True)
class Arguments:
    runs: list
    names: list
    out: Optional[str]
    no_report: bool


def parse_args(runs, values):
    """The command line's runs and flag values, checked, with the runs' names decided."""
    if not runs:
        raise UserError("no run given: usage: python -m trainer.commands.compare RUN_DIR [RUN_DIR...] [--out REPORT_DIR]")
    if values["names"] is not None:
        names = [n.strip() for n in values["names"].split(",")]
        if len(names) != len(runs) or not all(names):
            raise UserError(f"--names gives {len(names)} name(s) for {len(runs)} run(s): give one non-empty "
                            "name per run, comma-separated, in the order of the runs.")
        if len(set(names)) != len(names):
            raise UserError(f"--names {values['names']!r} repeats a name: every run needs its own.")
    else:
        names = default_names(runs)
    if values["out"] and storage.is_gcs(values["out"]):
        raise UserError(f"--out={values['out']}: the report is written to a local folder; copy it to Cloud Storage "
                        "afterwards if needed (gcloud storage cp -r).")
    return Arguments(list(runs), names, values["out"], values["no-report"])


def compare(runs):
    """The command with the parsed flags: reads the runs, prints the table and the tests, writes the report."""
    args = parse_args(runs, COMMAND.values())
    with tempfile.TemporaryDirectory() as scratch:
        runs = read_runs(args.runs, args.names, scratch)
    print(text_table(runs))
    try:
        comparisons = stats.compare_pairs(runs)
    except ImportError as error:  # scipy, the report extra's
        if not args.no_report:
            raise UserError(f"the report's tests need scipy ({error}): {INSTALL_REPORT_EXTRA}") from None
        print(f"compare: warning: McNemar's tests need scipy ({error}): {INSTALL_REPORT_EXTRA}", file=sys.stderr)
        comparisons = []
    for line in stats.test_lines(comparisons):
        print(line)
    for warning in stats.warnings(runs):
        print(f"compare: warning: {warning}", file=sys.stderr)
    if not args.no_report:
        render = _renderer()
        out = args.out or default_report_dir(args.runs)
        written = render.write(runs, comparisons, out)
        print("report: " + ", ".join(written))


def main(argv):
    """The command on `argv` (the program's name first); returns the exit status (2: a mistake, one line)."""
    return COMMAND.main(compare, argv)


def _renderer():
    """The report's renderer, which draws with matplotlib (the `report` extra; the runtime image has none)."""
    try:
        from trainer.report import render
    except ImportError as error:
        raise UserError(f"the report needs matplotlib ({error}): {INSTALL_REPORT_EXTRA}, or pass --no-report for "
                        "the table and the tests alone.") from None
    return render


if __name__ == "__main__":
    sys.exit(main(sys.argv))
