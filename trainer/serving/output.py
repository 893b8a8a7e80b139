"""The JSONL of predictions: complete at --output or absent (`storage.AtomicFile`: a temporary file renamed, or
uploaded for gs://, only at the end); the location is checked to be writable before anything is predicted."""

import json
import os

from trainer import storage
from trainer.errors import UserError
from trainer.storage import is_gcs


class Output:
    """One JSON line per input; `publish` puts the file in place, `discard` leaves nothing behind."""

    def __init__(self, path):
        self.path = path
        if is_gcs(path):
            bucket_name, blob_name = storage.split_gcs(path)
            if not bucket_name or not blob_name or blob_name.endswith("/"):
                raise UserError(f"--output={path}: give gs://BUCKET/path/predictions.jsonl (a file, not a folder).")
            storage.check_writable(path, "--output", file=True)
        elif os.path.isdir(path) or path.endswith(os.sep):
            raise UserError(f"--output={path} is a folder: give a file path, e.g. "
                            f"{os.path.join(path, 'predictions.jsonl')}.")
        self.file = storage.AtomicFile(path, content_type="application/jsonl", flag="--output")

    def write(self, record):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def publish(self):
        self.file.commit()

    def discard(self):
        self.file.discard()
