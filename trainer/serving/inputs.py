"""What to predict: every --input turned into a stream of named items, in the order given.

An input is a local file, a folder (every PNG, JPEG, GIF, BMP or WebP in it, recursively, sorted), a glob (local or
`gs://`), a `gs://` object or prefix, or a JSONL file of instances as Vertex AI batch prediction reads them (one a
line: `{"image_bytes": {"b64": ...}}`, `{"b64": ...}`, or pixels, optionally with a `"key"` that names it). Each
--input is checked to name something before anything is predicted (a typo fails at once, with one line); the
items themselves are listed and read lazily, so that a million files stream through in bounded memory.

Every read is bounded by --max_bytes, whatever a size says: only regular files are read (a FIFO would hang the
job, /dev/zero fill its memory), at most max_bytes + 1 bytes of them; a gs:// object's size is checked before it
is downloaded, and the download asks for that many bytes only; a JSONL line may hold one such image in base64
(MAX_LINE), and its payload is checked before it is decoded.
"""

import base64
import dataclasses
import fnmatch
import glob
import itertools
import json
import os
import stat

from trainer import storage
from trainer.errors import UserError
from trainer.storage import is_gcs

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
JSONL_EXTENSIONS = (".jsonl", ".json")


def max_line(max_bytes):
    """The longest JSONL line read: one image of max_bytes in base64, and room for its key and pixels' commas."""
    return max_bytes * 4 // 3 + 64 * 1024


class InputError(Exception):
    """What is wrong with one input; it becomes that input's `error` line, and the batch goes on."""

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient



@dataclasses.dataclass
class Item:
    """One input: its name and how to get its contents (encoded bytes, or a pixel array from a JSONL line)."""
    name: str
    load: object  # () -> ("bytes", bytes) or ("array", list); raises InputError


def has_glob(path):
    return any(c in path for c in "*?[")


def expand(inputs, max_bytes):
    """Every --input, checked now to name something (else UserError); returns the stream of Items, in order."""
    plans = [_plan(spec, max_bytes) for spec in inputs]  # fails fast, before any prediction
    return itertools.chain.from_iterable(plan() for plan in plans)


def _plan(spec, max_bytes):
    if is_gcs(spec):
        return _plan_gcs(spec, max_bytes)
    if has_glob(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise UserError(f"--input={spec} matches no file: check the pattern (quote it, so that the shell "
                            "does not expand it).")
        return lambda: itertools.chain.from_iterable(_local(path, max_bytes, explicit=False) for path in matches)
    if not os.path.exists(spec):
        raise UserError(f"--input={spec}: no such file or folder.")
    return lambda: _local(spec, max_bytes, explicit=True)


def _local(path, max_bytes, explicit):
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    yield _local_file(os.path.join(root, name), max_bytes)
    elif path.lower().endswith(JSONL_EXTENSIONS):
        yield from _jsonl(path, lambda: _open_regular(path, UserError), max_bytes)
    elif explicit or path.lower().endswith(IMAGE_EXTENSIONS):
        yield _local_file(path, max_bytes)


def _open_regular(path, error=None):
    """A binary file object of the regular file at `path` (symlinks followed); else raises `error` (InputError)."""
    where = f"--input={path}: " if error else ""  # a UserError names the input; an InputError's line does
    error = error or InputError
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open would wait for a writer
    except OSError as failure:
        raise error(f"{where}unreadable: {failure.strerror or failure}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{where}not a regular file (a FIFO, device or socket is never read)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _local_file(path, max_bytes):
    def load():
        with _open_regular(path) as f:
            try:
                data = f.read(max_bytes + 1)
            except OSError as error:
                raise InputError(f"unreadable: {error.strerror or error}") from None
        if len(data) > max_bytes:
            raise InputError(f"file of over {max_bytes:,} bytes, the limit (--max_bytes)")
        return "bytes", data
    return Item(path, load)


def _plan_gcs(spec, max_bytes):
    bucket_name, name = storage.split_gcs(spec)  # a trailing "/" says "a prefix"
    if not bucket_name:
        raise UserError(f"--input={spec}: give gs://BUCKET/PATH.")
    client = storage.client(f"read {spec}")
    with storage.errors(spec, "read", doing="listing", name=f"--input={spec}"):
        if has_glob(name):
            literal = name[:min(name.index(c) for c in "*?[" if c in name)]
            pattern = name

            def blobs():
                for blob in client.list_blobs(bucket_name, prefix=literal):
                    if fnmatch.fnmatchcase(blob.name, pattern) and not blob.name.endswith("/"):
                        yield blob
            first = next(blobs(), None)
            if first is None:
                raise UserError(f"--input={spec} matches no object.")
            return lambda: (_gcs_item(blob, max_bytes) for blob in blobs())
        blob = client.bucket(bucket_name).get_blob(name) if name and not name.endswith("/") else None
        if blob is not None:
            return lambda: iter(_gcs_single(blob, max_bytes))
        prefix = name.rstrip("/") + "/" if name else ""

        def images():
            for blob in client.list_blobs(bucket_name, prefix=prefix):
                if blob.name.lower().endswith(IMAGE_EXTENSIONS):
                    yield _gcs_item(blob, max_bytes)
        if next(iter(client.list_blobs(bucket_name, prefix=prefix, max_results=1)), None) is None:
            raise UserError(f"--input={spec}: no such object or prefix.")
        return images


def _gcs_single(blob, max_bytes):
    if blob.name.lower().endswith(JSONL_EXTENSIONS):
        return _jsonl(f"gs://{blob.bucket.name}/{blob.name}", lambda: blob.open("rb"), max_bytes)
    return [_gcs_item(blob, max_bytes)]


def _gcs_item(blob, max_bytes):
    url = f"gs://{blob.bucket.name}/{blob.name}"

    def load():
        from google.api_core import exceptions as api
        try:
            if blob.size is None:  # listed without its metadata: ask for it before downloading
                blob.reload()
            if blob.size is None:
                raise InputError("object of unknown size: not downloaded")
            if blob.size > max_bytes:
                raise InputError(f"object of {blob.size:,} bytes is over the limit of {max_bytes:,} (--max_bytes)")
            data = blob.download_as_bytes(start=0, end=max_bytes)  # max_bytes + 1 bytes at most (end inclusive)
            if len(data) > max_bytes:  # the object grew since
                raise InputError(f"object of over {max_bytes:,} bytes, the limit (--max_bytes)")
            return "bytes", data
        except storage.transient_errors() as error:
            raise InputError(f"unreadable (transient: {error.__class__.__name__}; rerun)", transient=True) from None
        except (api.NotFound, *storage.permission_errors()) as error:
            raise InputError(f"unreadable: {error.__class__.__name__}") from None
    return Item(url, load)


def _jsonl(name, opener, max_bytes):
    """The instances of a JSONL file, streamed line by line; blank lines are not instances; a line over
    max_line(max_bytes) is one refused instance, skipped unread."""
    limit = max_line(max_bytes)
    with opener() as stream:
        number = 0
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # the rest of the line, a bounded chunk at a time
                    line = stream.readline(limit + 1)
                yield Item(f"{name}:{number}", _raise(f"a line of over {limit:,} bytes, the limit for --max_bytes="
                                                      f"{max_bytes:,}"))
                continue
            if not line.strip():
                continue
            yield _instance(f"{name}:{number}", line, max_bytes)


def _instance(default_name, line, max_bytes):
    try:
        value = json.loads(line)
    except ValueError as error:
        return Item(default_name, _raise(f"not a JSON line ({error})"))
    name = default_name
    if isinstance(value, dict) and isinstance(value.get("key"), (str, int)):
        name = str(value["key"])
    if isinstance(value, dict):
        for field in ("image_bytes", "b64", "image", "images"):
            if field in value:
                value = value[field]
                break
        else:
            return Item(name, _raise("an instance needs image_bytes: {\"b64\": ...}, b64, or images (pixels)"))
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    elif isinstance(value, list):
        return Item(name, lambda: ("array", value))
    if isinstance(value, str):
        def load():
            if len(value) * 3 // 4 > max_bytes + 2:
                raise InputError(f"b64 of over {max_bytes:,} bytes, the limit (--max_bytes)")
            try:
                return "bytes", base64.b64decode(value, validate=True)
            except ValueError:
                raise InputError("b64 is not valid base64") from None
        return Item(name, load)
    return Item(name, _raise("an instance needs image_bytes: {\"b64\": ...}, b64, or images (pixels)"))


def _raise(message):
    def load():
        raise InputError(message)
    return load


def take(items, count):
    """The next `count` Items. Listing a prefix and reading a JSONL file happen here, lazily: their failures end
    the run (a listing cannot be skipped like one unreadable image)."""
    try:
        with storage.errors("gs://", "read", doing="listing or reading", name="the inputs",
                            missing="cannot list or read the inputs (NotFound)."):
            return list(itertools.islice(items, count))
    except OSError as error:
        raise UserError(f"cannot read the inputs: {error}.") from None




def input_specs(values):
    """The --input flags' values as the list of inputs, in order: every repeated flag counts (absl's list flag kept
    only the last one), and each value is split at commas unless it names an existing local file or folder as a
    whole (a path with a comma in it)."""
    specs = []
    for value in values or ():
        if "," in value and not os.path.exists(value):
            specs += [part.strip() for part in value.split(",")]
        else:
            specs.append(value)
    return specs


