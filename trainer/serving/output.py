"""The JSONL of predictions: written to a local temporary file, renamed (or uploaded, for gs://) into place only
when complete, so a file at --output is never a partial one."""

import json
import os
import tempfile

from trainer.errors import RetryableError, UserError
from trainer.outputs import is_gcs, transient_errors
from trainer.serving.inputs import gcs_client, split_gcs


class Output:
    """The JSONL output: a local temporary file, renamed (or uploaded) into place by `publish`."""

    def __init__(self, path):
        self.path = path
        if is_gcs(path):
            bucket_name, self.blob_name = split_gcs(path)
            if not bucket_name or not self.blob_name or self.blob_name.endswith("/"):
                raise UserError(f"--output={path}: give gs://BUCKET/path/predictions.jsonl (a file, not a folder).")
            self._check_bucket(bucket_name)
            handle, self.temporary = tempfile.mkstemp(prefix="fmnist-predictions-", suffix=".jsonl")
        else:
            if os.path.isdir(path) or path.endswith(os.sep):
                raise UserError(f"--output={path} is a folder: give a file path, e.g. "
                                f"{os.path.join(path, 'predictions.jsonl')}.")
            folder = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(folder, exist_ok=True)
                handle, self.temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                                          suffix=".tmp")
            except OSError as error:
                raise UserError(f"cannot write --output={path} ({error.strerror}): choose a folder you can "
                                "write to.") from None
        self.file = os.fdopen(handle, "w")

    def _check_bucket(self, bucket_name):
        from google.api_core import exceptions as api
        client = gcs_client()
        try:
            bucket = client.bucket(bucket_name)
            if not bucket.exists():
                raise UserError(f"--output={self.path}: bucket gs://{bucket_name} does not exist.")
            probe = bucket.blob(f"{self.blob_name}.write-test")
            probe.upload_from_string(b"")
            probe.delete()
            self.blob = bucket.blob(self.blob_name)
        except (api.Forbidden, api.Unauthorized) as error:
            raise UserError(f"cannot write --output={self.path} ({error.__class__.__name__}): grant the job's "
                            "service account roles/storage.objectAdmin on the bucket.") from None
        except transient_errors() as error:
            raise RetryableError(f"checking --output={self.path} failed ({error.__class__.__name__}): "
                                 "rerun.") from None

    def write(self, record):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def publish(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            if is_gcs(self.path):
                self.blob.upload_from_filename(self.temporary, content_type="application/jsonl")
                os.remove(self.temporary)
            else:
                os.replace(self.temporary, self.path)
        except OSError as error:
            raise UserError(f"cannot write --output={self.path} ({error.strerror or error}).") from None
        except transient_errors() as error:
            raise RetryableError(f"uploading --output={self.path} failed ({error.__class__.__name__}): "
                                 "rerun.") from None
        except Exception as error:  # google.api_core's Forbidden and friends
            raise UserError(f"cannot write --output={self.path} ({error.__class__.__name__}).") from None

    def discard(self):
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.temporary):
            os.remove(self.temporary)


