"""Finished runs, read for comparison: their metrics and test predictions, checked to share one test set, and
the table with one row per run (the command is `trainer.commands.compare`; `stats` and `render` do the rest).

A run is a local folder or a gs://bucket/prefix holding metrics.json and test_predictions.npz.
"""

import dataclasses
import os
import re
from typing import Optional

import numpy as np

from trainer.storage import outputs
from trainer import storage
from trainer.errors import UserError

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
