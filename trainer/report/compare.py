"""Comparison of finished runs: `python -m trainer.compare RUN_DIR... [--out REPORT_DIR] [--names a,b]`.

RUN_DIR is a local folder or a gs://bucket/prefix holding a finished run (metrics.json and test_predictions.npz).
The command prints one table row per run and McNemar's test for every pair of runs, then writes the report:
REPORT_DIR/report.md with its PNG figures beside it, and REPORT_DIR/report.html, one self-contained file (figures
embedded, no external reference). Default REPORT_DIR: the runs' common parent folder + /report (`out/report` for
`make run`), or `out/report` when a run is in Cloud Storage.

Mistakes (an unfinished run, missing test predictions, runs evaluated on different test sets, a bad flag) end the
command with one line on stderr and exit status 2, never a traceback.
"""

import dataclasses
import os
import re
import sys
import tempfile
from typing import Optional

import numpy as np

from trainer import cli, outputs, settings, storage
from trainer.errors import UserError
from trainer.report import stats
from trainer.settings import setting

PREDICTIONS_FILE = "test_predictions.npz"
GCS_DEFAULT_REPORT_DIR = os.path.join("out", "report")
INSTALL_REPORT_EXTRA = "install the report extra (pip install -r requirements-report.txt -c constraints.txt)"

COLUMNS = (
    ("run", "{}"), ("model", "{}"), ("recipe", "{}"), ("test acc", "{:.4f}"), ("test loss", "{:.4f}"),
    ("params", "{:,}"), ("epochs", "{}"), ("batch", "{}"), ("train s", "{:.1f}"), ("examples/s", "{:,.0f}"),
)


@dataclasses.dataclass
class Run:
    name: str            # short label used in tables, legends and figure file names
    url: str             # as given on the command line
    metrics: dict        # metrics.json
    predicted: np.ndarray  # predicted class of every test image, in stored order
    labels: np.ndarray     # true class of every test image
    probabilities: Optional[np.ndarray] = None  # [N, 10] of every test image, where the run kept them

    @property
    def class_names(self):
        return list(self.metrics.get("per_class_accuracy") or {}) or [str(i) for i in range(10)]


# ---- reading runs ----------------------------------------------------------------------------------------------

def load_predictions(url, local):
    """(predicted, labels) of a finished run's test set, or a clear error."""
    path = os.path.join(local, PREDICTIONS_FILE)
    if not os.path.exists(path):
        raise UserError(f"{url} has no {PREDICTIONS_FILE} (the run's test predictions), which the report needs for "
                        "McNemar's test: rerun the training with --overwrite to keep them.")
    try:
        with np.load(path) as npz:
            missing = [key for key in ("class_id", "label") if key not in npz.files]
            if missing:
                raise UserError(f"{url}/{PREDICTIONS_FILE} lacks the array(s) {', '.join(missing)} (it has "
                                f"{', '.join(npz.files) or 'none'}): rerun the training with --overwrite.")
            predicted, labels = npz["class_id"], npz["label"]
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"cannot read {url}/{PREDICTIONS_FILE} ({error}): rerun the training with "
                        "--overwrite.") from None
    if predicted.ndim != 1 or predicted.shape != labels.shape:
        raise UserError(f"{url}/{PREDICTIONS_FILE} is malformed: class_id {predicted.shape} and label "
                        f"{labels.shape} must be two vectors of the same length.")
    return predicted.astype(np.int64), labels.astype(np.int64)


def load_probabilities(local, count):
    """The run's test probabilities [N, 10] (for the report's pictures), or None: runs written before they were
    kept, or a malformed array (the report then does without)."""
    try:
        with np.load(os.path.join(local, PREDICTIONS_FILE)) as npz:
            if "probabilities" not in npz.files:
                return None
            probabilities = npz["probabilities"]
    except (OSError, ValueError, EOFError):
        return None
    return probabilities if probabilities.ndim == 2 and len(probabilities) == count else None


def read_runs(urls, names, scratch):
    runs = []
    for url, name in zip(urls, names):
        local = outputs.fetch(url, (outputs.METRICS_FILE, PREDICTIONS_FILE), scratch)
        metrics = outputs.read_metrics(url, local)
        predicted, labels = load_predictions(url, local)
        runs.append(Run(name, url, metrics, predicted, labels, load_probabilities(local, len(labels))))
    check_same_test_set(runs)
    return runs


def check_same_test_set(runs):
    """McNemar's test pairs images up by position: every run must hold the same test images, in the same order."""
    first = runs[0]
    for run in runs[1:]:
        if len(run.labels) != len(first.labels):
            raise UserError(f"{run.url} was tested on {len(run.labels)} images and {first.url} on "
                            f"{len(first.labels)}: runs can only be compared on the same test set.")
        differ = int(np.sum(run.labels != first.labels))
        if differ:
            raise UserError(f"{run.url} and {first.url} have different true labels for {differ} of "
                            f"{len(run.labels)} test images: they were not tested on the same test set in the same "
                            "order, so they cannot be compared.")


def default_names(urls):
    """Each run's folder name; where two share one, enough parent folders to tell them apart."""
    parts = [[p for p in re.split(r"[\\/]+", u.rstrip("/")) if p] or [u] for u in urls]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen = {}
    unique = []
    for name in names:  # the same run given twice
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def default_report_dir(urls):
    if any(storage.is_gcs(u) for u in urls):
        return GCS_DEFAULT_REPORT_DIR
    parents = [os.path.dirname(os.path.abspath(u.rstrip("/") or "/")) for u in urls]
    common = os.path.commonpath(parents)
    return os.path.relpath(os.path.join(common, "report")) if _inside_cwd(common) else os.path.join(common, "report")


def _inside_cwd(path):
    return os.path.commonpath([os.path.abspath(path), os.getcwd()]) == os.getcwd()


# ---- the text table (stdout) -----------------------------------------------------------------------------------

def table_rows(runs):
    """One list of formatted cells per run; `runs` is a list of Run (or of (url, metrics) pairs)."""
    rows = []
    for run in runs:
        name, m = (run.name, run.metrics) if isinstance(run, Run) else (os.path.basename(run[0].rstrip("/")), run[1])
        values = (name, m.get("model"), m.get("recipe"), m.get("test_accuracy"), m.get("test_loss"), m.get("params"),
                  m.get("epochs"), m.get("batch_size"), m.get("train_seconds"), m.get("examples_per_second") or 0)
        rows.append([fmt.format(v) if v is not None else "-" for (_, fmt), v in zip(COLUMNS, values)])
    return rows


def text_table(runs):
    header = [name for name, _ in COLUMNS]
    rows = table_rows(runs)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ---- command line ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """python -m trainer.compare's flags (the runs are its arguments)."""
    out: Optional[str] = setting(None, "Local folder for report.md, its figures and report.html (default: the runs' "
                                       "common parent + /report; out/report for gs:// runs).")
    names: Optional[str] = setting(None, "Comma-separated labels for the runs, in order (default: folder names).")
    no_report: bool = setting(False, "Print the table and the tests only.", flag="no-report")


COMMAND = cli.Command("compare", "python -m trainer.compare RUN_DIR... [--out REPORT_DIR] [--names a,b] "
                                 "[--no-report]", description=__doc__.split("\n\n", 1)[1],
                      settings=settings.declared(Settings))


@dataclasses.dataclass(frozen=True)
class Arguments:
    runs: list
    names: list
    out: Optional[str]
    no_report: bool


def parse_args(runs, values):
    """The command line's runs and flag values, checked, with the runs' names decided."""
    if not runs:
        raise UserError("no run given: usage: python -m trainer.compare RUN_DIR [RUN_DIR...] [--out REPORT_DIR]")
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
    """The command on `argv` (the program's name first); exits with its status (2: a mistake, one line)."""
    status = COMMAND.main(compare, argv)
    if status:
        sys.exit(status)


def _renderer():
    """The report's renderer, which draws with matplotlib (the `report` extra; the runtime image has none)."""
    try:
        from trainer.report import render
    except ImportError as error:
        raise UserError(f"the report needs matplotlib ({error}): {INSTALL_REPORT_EXTRA}, or pass --no-report for "
                        "the table and the tests alone.") from None
    return render


if __name__ == "__main__":
    main(sys.argv)
