"""Where a run's results go, local or Cloud Storage, written so that a crash never leaves a result that looks done.

Everything a run produces is first written to a local staging folder. Publishing then moves (local) or uploads
(gs://) each item into place and writes `metrics.json` last: its presence is the commit marker that says the run
finished. A crashed or preempted run leaves no metrics.json, so nothing mistakes its leftovers for a result.

Paths, the Cloud Storage client, its errors, the write probe and atomic writes are `trainer.storage`'s; a missing
bucket or missing credentials are found before training starts (`check_writable`).
"""

import json
import os
import shutil
import tempfile

from trainer import storage
from trainer.errors import RetryableError, UserError
from trainer.storage import is_gcs, transient_errors  # noqa: F401  (where callers have imported them from)

METRICS_FILE = "metrics.json"


def open_output(url):
    return GcsOutput(url) if is_gcs(url) else LocalOutput(url)


def publish_or_retry(output, staging_dir, metrics):
    """Publishes; storage that is unreachable or failing for now becomes a "retry me" error (the backup is kept,
    so the rerun publishes without training again)."""
    try:
        output.publish(staging_dir, metrics)
    except transient_errors() as error:
        raise RetryableError(f"could not publish to {output.url} ({storage.first_line(error)}); the backup is kept: "
                             "rerun the same command to publish without training again.") from None
    except OSError as error:  # a local output: a full disk or quota is "retry me", the backup kept
        raise storage.write_failed(error, f"could not publish to {output.url}; the backup is kept") from None


def fetch(url, names, scratch):
    """A local folder holding the files `names` of a run (a local run: its own folder; gs://: a download of just
    those files into `scratch`, leaving out the ones that do not exist)."""
    if not is_gcs(url):
        if not os.path.isdir(url):
            raise UserError(f"{url} is not a folder: give the --output_dir of a finished run.")
        return url
    from google.api_core import exceptions as api_exceptions
    local = tempfile.mkdtemp(dir=scratch)
    output = GcsOutput(url, access="read")
    with storage.errors(url, "read", doing="reading"):
        for name in names:
            try:
                output.bucket.blob(output.blob_name(name)).download_to_filename(os.path.join(local, name))
            except api_exceptions.NotFound:
                if os.path.exists(os.path.join(local, name)):
                    os.remove(os.path.join(local, name))  # the client leaves an empty file behind
    return local


def read_metrics(url, local=None):
    """metrics.json of a finished run (local folder or gs://; `local`: a folder `fetch` already filled), or a
    UserError that says the run is unfinished or unreadable."""
    if local is None:
        with tempfile.TemporaryDirectory() as scratch:
            return read_metrics(url, fetch(url, [METRICS_FILE], scratch))
    path = os.path.join(local, METRICS_FILE)
    if not os.path.exists(path):
        raise UserError(f"{url} holds no finished run (no metrics.json): train it first.")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {url}/{METRICS_FILE} ({error}): rerun the training.") from None


class LocalOutput:
    """A run's output folder on a local (or mounted) file system."""

    def __init__(self, path):
        self.url = os.path.abspath(path)

    def child(self, name):
        return os.path.join(self.url, name)

    def check_writable(self):
        """Creates the folder and proves it is writable, or says why not."""
        storage.check_writable(self.url, "--output_dir")

    def is_finished(self):
        return os.path.exists(self.child(METRICS_FILE))

    def unmark_finished(self):
        """First step of --overwrite: the old result stops looking done before anything of it is replaced."""
        if self.is_finished():
            os.remove(self.child(METRICS_FILE))

    def new_staging_dir(self):
        """Staging inside the output folder itself, so that publishing is a rename on the same file system.

        A crashed run's staging folder is removed first: it never holds anything a rerun needs.
        """
        for name in os.listdir(self.url):
            if name.startswith(".staging-"):
                shutil.rmtree(os.path.join(self.url, name), ignore_errors=True)
        return tempfile.mkdtemp(dir=self.url, prefix=".staging-")

    def publish(self, staging_dir, metrics):
        for name in sorted(os.listdir(staging_dir)):
            target = self.child(name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
            os.replace(os.path.join(staging_dir, name), target)
        shutil.rmtree(staging_dir, ignore_errors=True)
        with storage.AtomicFile(self.child(METRICS_FILE), flag="--output_dir") as f:
            f.write(json.dumps(metrics, indent=2))


class GcsOutput:
    """A run's output prefix in Cloud Storage (gs://bucket/prefix), through google-cloud-storage."""

    def __init__(self, url, access="write"):
        self.url = url.rstrip("/")
        self.bucket_name, self.prefix = storage.split_gcs(self.url)
        self.access = access
        self._bucket = None

    def child(self, name):
        return f"{self.url}/{name}"

    def blob_name(self, relative):
        return f"{self.prefix}/{relative}" if self.prefix else relative

    @property
    def bucket(self):
        if self._bucket is None:
            self._bucket = storage.bucket(self.url, self.access)
        return self._bucket

    def check_writable(self):
        """Fails fast, before any training, when the bucket is missing or cannot be written."""
        storage.check_writable(self.url, "--output_dir")

    def is_finished(self):
        return self.bucket.blob(self.blob_name(METRICS_FILE)).exists()

    def unmark_finished(self):
        if self.is_finished():
            self.bucket.blob(self.blob_name(METRICS_FILE)).delete()

    def new_staging_dir(self):
        return tempfile.mkdtemp(prefix="fmnist-staging-")

    def upload_folder(self, folder):
        """Every file under a local `folder`, at the same relative name under this prefix."""
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                local = os.path.join(root, name)
                relative = os.path.relpath(local, folder).replace(os.sep, "/")
                self.bucket.blob(self.blob_name(relative)).upload_from_filename(local)

    def publish(self, staging_dir, metrics):
        self.upload_folder(staging_dir)
        shutil.rmtree(staging_dir, ignore_errors=True)
        self.bucket.blob(self.blob_name(METRICS_FILE)).upload_from_string(
            json.dumps(metrics, indent=2), content_type="application/json")
