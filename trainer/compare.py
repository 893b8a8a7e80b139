"""Side-by-side comparison of finished runs: `python -m trainer.compare RUN_DIR...` (local paths or gs://).

Reads each run's metrics.json and prints one table row per run.
"""

import json
import os
import sys
import tempfile

from trainer import outputs

COLUMNS = (
    ("run", "{}"), ("model", "{}"), ("recipe", "{}"), ("test acc", "{:.4f}"), ("test loss", "{:.4f}"),
    ("params", "{:,}"), ("epochs", "{}"), ("batch", "{}"), ("train s", "{:.1f}"), ("examples/s", "{:,.0f}"),
)


def load_run(url, scratch):
    """metrics.json of a finished run, or a clear error if the run is not finished."""
    local = outputs.download(url, os.path.join(scratch, str(abs(hash(url))))) if outputs.is_gcs(url) else url
    path = os.path.join(local, outputs.METRICS_FILE)
    if not os.path.exists(path):
        raise SystemExit(f"compare: error: {url} holds no finished run (no metrics.json): train it first.")
    with open(path) as f:
        return json.load(f)


def table_rows(runs):
    rows = []
    for url, m in runs:
        values = (os.path.basename(url.rstrip("/")), m["model"], m["recipe"], m["test_accuracy"], m["test_loss"],
                  m["params"], m["epochs"], m["batch_size"], m["train_seconds"], m["examples_per_second"] or 0)
        rows.append([fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)])
    return rows


def text_table(runs):
    header = [name for name, _ in COLUMNS]
    rows = table_rows(runs)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv):
    urls = argv[1:]
    if not urls:
        raise SystemExit("usage: python -m trainer.compare RUN_DIR [RUN_DIR...]")
    with tempfile.TemporaryDirectory() as scratch:
        runs = [(url, load_run(url, scratch)) for url in urls]
    print(text_table(runs))


if __name__ == "__main__":
    main(sys.argv)
