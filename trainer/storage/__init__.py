"""Local paths and Cloud Storage, as every part of the job reads and writes them: one set of rules.

- Paths: `is_gcs`, `split_gcs` (the object name as given: a trailing "/" says "a folder"), `well_formed` (what a
  location flag accepts).
- The client: `client` (google-cloud-storage, which honours STORAGE_EMULATOR_HOST: the tests' local emulator), or
  one line that says how to get credentials.
- Errors: `errors` maps Cloud Storage's onto the exit-code contract (trainer/errors.py): a missing bucket or no
  permission is a UserError that names the fix, a transient failure (unreachable, overloaded, 5xx, out of retries)
  a RetryableError: rerun.
- Writing: `check_writable` (the write probe, before any work: a folder or a bucket that cannot take the result
  fails at once) and `AtomicFile` (a file appears at its path complete or not at all).

The only place in the job that knows `gs://`. Two back ends: the results, the reports and predictions go through
`google-cloud-storage` (it honours the emulator and reports a missing bucket or missing credentials clearly); the
preemption backup goes through TensorFlow's own file systems, which Keras's BackupAndRestore writes with
(`files`). `outputs`: a run's results, published with metrics.json last.
"""

import contextlib
import errno
import os
import tempfile

from trainer.errors import RetryableError, UserError

WRITE_ROLE, READ_ROLE = "roles/storage.objectAdmin", "roles/storage.objectViewer"


# ------------------------------------------------------------------------------------------------- paths

def is_gcs(path):
    return str(path).startswith("gs://")


def split_gcs(url):
    """gs://bucket/a/b -> ("bucket", "a/b"): the name as given, so a trailing "/" still says "a folder" (strip
    it, `.rstrip("/")`, for a prefix)."""
    bucket, _, name = url[len("gs://"):].partition("/")
    return bucket, name


def well_formed(value):
    """A usable location: a local path, or gs://BUCKET[/PATH] (not gs:// alone, not gs:///...)."""
    return bool(value.strip()) and (not is_gcs(value) or len(value) > 5 and not value[5:].startswith("/"))


def location(name):
    """The check of a setting that names a location (`trainer.config.declare.setting(..., **location(name))`)."""
    return dict(check=well_formed, message=f"--{name} must be a local path or gs://BUCKET/PREFIX, e.g. "
                                           f"--{name}=out/run1 or --{name}=gs://my-bucket/fmnist/run1.")


# ------------------------------------------------------------------------------------------------ client

def client(what="read or write gs:// paths"):
    """A google-cloud-storage client, or a UserError that says how to get credentials to `what`."""
    from google.auth import exceptions as auth_exceptions
    from google.cloud import storage
    try:
        return storage.Client()
    except auth_exceptions.DefaultCredentialsError:
        raise UserError(
            f"no Google Cloud credentials to {what}: run `gcloud auth application-default login`, "
            "set GOOGLE_APPLICATION_CREDENTIALS, or run with a service account (Workload Identity on "
            "Kubernetes, the job's service account on Vertex AI).") from None


def bucket(url, access="write"):
    """The google-cloud-storage bucket of a gs:// URL (a UserError without credentials)."""
    return client(f"{access} {url}").bucket(split_gcs(url)[0])


# ------------------------------------------------------------------------------------------------ errors

def transient_errors():
    """The errors of storage that may work on a retry: unreachable, overloaded, failing on the server, timed out,
    out of retries (for `except`)."""
    try:
        import requests
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
    except ImportError:
        return ConnectionError, TimeoutError
    return (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            api_exceptions.ServerError, api_exceptions.TooManyRequests, api_exceptions.RetryError,
            auth_exceptions.TransportError)


def is_transient(error):
    return isinstance(error, transient_errors())


def permission_errors():
    """Cloud Storage's "not allowed" (for `except`)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    return api_exceptions.Forbidden, api_exceptions.Unauthorized, auth_exceptions.GoogleAuthError


def first_line(error):
    """An exception's class and the first line of its message, short: for a one-line error."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


@contextlib.contextmanager
def errors(url, access="write", doing=None, missing=None, name=None):
    """Cloud Storage's errors inside the block, as the exit-code contract's (one line each, naming the location as
    `name`, e.g. "--output=gs://...", by default `url`):

    - transient -> RetryableError "`doing` `name` failed (...): rerun." (doing: "uploading", "listing", ...);
    - NotFound (the bucket is missing; objects the caller looks for are its own business) -> UserError `missing`,
      by default "bucket gs://B does not exist";
    - Forbidden, Unauthorized, an auth error -> UserError naming the role the job's account needs.
    """
    from google.api_core import exceptions as api_exceptions
    name = name or url
    try:
        yield
    except transient_errors() as error:
        raise RetryableError(f"{doing or access + 'ing'} {name} failed ({first_line(error)}): Cloud Storage is "
                             "unreachable or failing; rerun.") from None
    except api_exceptions.NotFound:
        bucket_name = split_gcs(url)[0]
        raise UserError(missing or f"{name}: bucket gs://{bucket_name} does not exist: create it (`gcloud storage "
                                   f"buckets create gs://{bucket_name}`) or fix the path.") from None
    except permission_errors() as error:
        role = WRITE_ROLE if access == "write" else READ_ROLE
        raise UserError(f"cannot {access} {name} ({error.__class__.__name__}): the job's account needs {role} on "
                        "the bucket.") from None


# ------------------------------------------------------------------------------------------------ writing

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a full disk or a quota: space may be freed, the run retried


def write_failed(error, message):
    """A local write's OSError as the contract's error: a full disk or quota is "retry me" (RetryableError),
    anything else (no permission, not a folder) the user's to fix (UserError)."""
    if getattr(error, "errno", None) in FULL_ERRNOS:
        return RetryableError(f"{message} ({error.strerror}): free space there, then rerun the same command.")
    return UserError(f"{message} ({error.strerror or error}): choose a folder you can write to.")


def check_writable(url, flag, file=False):
    """Proves, before any work, that `url` (a folder, or with `file` the folder of a file) can be written: local
    folders are created, a bucket must exist; a UserError (or RetryableError) that names `flag` otherwise."""
    if is_gcs(url):
        bucket_name, name = split_gcs(url.rstrip("/") if not file else url)
        with errors(url, "write", doing="checking", name=f"{flag}={url}"):
            target = bucket(url)
            if not target.exists():
                raise UserError(f"bucket gs://{bucket_name} does not exist: create it (`gcloud storage buckets "
                                f"create gs://{bucket_name}`) or fix {flag}={url}.")
            probe = target.blob(f"{name}.write-test" if file else f"{name}/.write-test" if name else ".write-test")
            probe.upload_from_string(b"")
            probe.delete()
        return
    folder = os.path.dirname(os.path.abspath(url)) if file else url
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{flag}={url}: {folder} is a file, not a folder: give a folder path.")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise write_failed(error, f"cannot write to {flag}={url}") from None


class AtomicFile:
    """A text file that appears at `url` complete or not at all: written to a temporary file (beside it, for a
    local path: the rename stays on one file system), then renamed, or uploaded as one object, by `commit`."""

    def __init__(self, url, content_type="text/plain", flag="the output"):
        self.url, self.content_type, self.flag = url, content_type, flag
        if is_gcs(url):
            self.blob = bucket(url).blob(split_gcs(url)[1])
            handle, self.temporary = tempfile.mkstemp(prefix="fmnist-upload-")
        else:
            folder = os.path.dirname(os.path.abspath(url))
            try:
                os.makedirs(folder, exist_ok=True)
                handle, self.temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(url)}.",
                                                          suffix=".tmp")
            except OSError as error:
                raise write_failed(error, f"cannot write {flag}={url}") from None
        self.file = os.fdopen(handle, "w")

    def write(self, text):
        self.file.write(text)

    def commit(self):
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if is_gcs(self.url):
                with errors(self.url, "write", doing="uploading", name=f"{self.flag}={self.url}"):
                    self.blob.upload_from_filename(self.temporary, content_type=self.content_type)
                os.remove(self.temporary)
            else:
                os.replace(self.temporary, self.url)
        except OSError as error:
            raise write_failed(error, f"cannot write {self.flag}={self.url}") from None

    def discard(self):
        if not self.file.closed:
            with contextlib.suppress(OSError):  # a full disk fails the flush again: the file goes anyway
                self.file.close()
        if os.path.exists(self.temporary):
            os.remove(self.temporary)

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.commit()
        self.discard()
