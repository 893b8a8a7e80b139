"""The JSONL of predictions: complete at --output or absent (`storage.AtomicFile`: a temporary file renamed, or
uploaded for gs://, only at the end); the location is checked to be writable before anything is predicted.

An existing --output is replaced only with --overwrite (as the trainer's --output_dir), and never when it is one
of the inputs (a JSONL file predicted into itself would be lost whatever the flag says).
"""

import glob
import json
import os

from trainer import storage
from trainer.errors import UserError
from trainer.storage import is_gcs


class Output:
    """One JSON line per input; `publish` puts the file in place, `discard` leaves nothing behind."""

    def __init__(self, path, overwrite=False, inputs=()):
        self.path = path
        if _is_an_input(path, inputs):
            raise UserError(f"--output={path} is one of the inputs: write the predictions to another file.")
        if is_gcs(path):
            bucket_name, blob_name = storage.split_gcs(path)
            if not bucket_name or not blob_name or blob_name.endswith("/"):
                raise UserError(f"--output={path}: give gs://BUCKET/path/predictions.jsonl (a file, not a folder).")
            storage.check_writable(path, "--output", file=True)
            with storage.errors(path, "read", doing="checking", name=f"--output={path}"):
                exists = storage.bucket(path).blob(blob_name).exists()
        elif os.path.isdir(path) or path.endswith(os.sep):
            raise UserError(f"--output={path} is a folder: give a file path, e.g. "
                            f"{os.path.join(path, 'predictions.jsonl')}.")
        else:
            exists = os.path.lexists(path)
        if exists and not overwrite:
            raise UserError(f"--output={path} exists: pass --overwrite to replace it, or choose another file.")
        self.file = storage.AtomicFile(path, content_type="application/jsonl", flag="--output")

    def write(self, record):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def publish(self):
        self.file.commit()

    def discard(self):
        self.file.discard()


def _is_an_input(path, inputs):
    """Whether --output names one of the --input values: the same gs:// URL, or the same local file (a glob's
    matches included)."""
    if is_gcs(path):
        return any(spec.rstrip("/") == path for spec in inputs)
    target = os.path.realpath(path)
    for spec in inputs:
        if is_gcs(spec):
            continue
        candidates = glob.glob(spec, recursive=True) if any(c in spec for c in "*?[") else [spec]
        if any(os.path.realpath(candidate) == target for candidate in candidates):
            return True
    return False
