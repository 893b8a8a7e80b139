"""Batch prediction: `python -m trainer.predict --model_dir=RUN --input=IMAGES --output=predictions.jsonl`
(console script `fmnist-predict`).

- `--model_dir`: a run folder or its `saved_model/`, local or `gs://`.
- `--input` (repeat it, or separate with commas; a value that names an existing local file or folder is taken
  whole, commas and all): image files, folders (every PNG, JPEG, GIF, BMP or WebP in them, recursively), globs
  (`photos/*.jpg`, `gs://bucket/shop/**.png`), `gs://` prefixes, or JSONL files of instances as Vertex AI batch
  prediction reads them: one instance a line, `{"image_bytes": {"b64": ...}}`, `{"b64": ...}`, or pixels
  (`[[...28 rows...]]`, `{"images": [[...]]}`), optionally with a `"key"` that names it.
- `--output`: a JSONL file, local or `gs://`, with one line per input, in input order: its `name`, `class_name`,
  `class_id` and `probabilities`, or an `error` for that input alone (empty, truncated, not an image, too many
  pixels - refused from its header, before decoding -, unreadable). It is written to a temporary file and renamed
  (uploaded, for gs://) only at the end, so a file at `--output` is always complete.

Each image goes through the same rule and conversion as the SavedModel's `serving_bytes` (trainer/photo.py: 28x28
on a dark background as is, anything else converted as Fashion-MNIST's photos were), then the model's
`serving_default`. Inputs stream through in batches (`--batch_size`), read and decoded by `--readers` threads, so
memory stays bounded for a million files; a progress line goes to stderr and a summary (read, predicted, refused,
images/s) to stdout at the end.

Exit status (trainer/errors.py's contract): 0 when at least one input was predicted (refused inputs are lines
with an `error`); 2 when nothing could be predicted, the model or an input is missing, the output cannot be
written, or a flag is wrong (one line, no traceback); 75 when a transient storage error (after retries) got in
the way: rerun the same command.
"""

import base64
import concurrent.futures
import dataclasses
import fnmatch
import glob
import itertools
import json
import os
import sys
import tempfile
import time

from absl import app, flags

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer import outputs
from trainer.errors import FINISHED, PERMANENT, RETRY, RetryableError, UserError
from trainer.outputs import is_gcs, transient_errors

PROGRAM = "fmnist-predict"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
JSONL_EXTENSIONS = (".jsonl", ".json")
MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000  # trainer.photo.MAX_PIXELS, without importing TensorFlow to parse the flags
FLAG_NAMES = ("model_dir", "input", "output", "batch_size", "readers", "max_pixels", "max_bytes")

FLAGS = flags.FLAGS


class InputError(Exception):
    """What is wrong with one input; it becomes that input's `error` line, and the batch goes on."""

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient


# ------------------------------------------------------------------------------------------------ storage

def split_gcs(url):
    """gs://bucket/name -> ("bucket", "name"), the name as given (a trailing "/" says "a folder")."""
    bucket, _, name = url[len("gs://"):].partition("/")
    return bucket, name


_client = None


def gcs_client():
    """One client for every object of the run (outputs.gcs_client: the credentials' message)."""
    global _client
    if _client is None:
        _client = outputs.gcs_client("read or write gs:// paths")
    return _client


# ------------------------------------------------------------------------------------------------ inputs

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
        yield from _jsonl(path, lambda: open(path, "rb"))
    elif explicit or path.lower().endswith(IMAGE_EXTENSIONS):
        yield _local_file(path, max_bytes)


def _local_file(path, max_bytes):
    def load():
        try:
            size = os.path.getsize(path)
            if size > max_bytes:
                raise InputError(f"file of {size:,} bytes is over the limit of {max_bytes:,} (--max_bytes)")
            with open(path, "rb") as f:
                return "bytes", f.read()
        except OSError as error:
            raise InputError(f"unreadable: {error.strerror or error}") from None
    return Item(path, load)


def _plan_gcs(spec, max_bytes):
    bucket_name, name = split_gcs(spec)
    if not bucket_name:
        raise UserError(f"--input={spec}: give gs://BUCKET/PATH.")
    client = gcs_client()
    from google.api_core import exceptions as api
    try:
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
    except api.NotFound:
        raise UserError(f"--input={spec}: bucket gs://{bucket_name} does not exist.") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"--input={spec}: not allowed to read ({error.__class__.__name__}): grant the job's "
                        "service account roles/storage.objectViewer on the bucket.") from None
    except transient_errors() as error:
        raise RetryableError(f"listing --input={spec} failed ({error.__class__.__name__}): rerun.") from None


def _gcs_single(blob, max_bytes):
    if blob.name.lower().endswith(JSONL_EXTENSIONS):
        return _jsonl(f"gs://{blob.bucket.name}/{blob.name}", lambda: blob.open("rb"))
    return [_gcs_item(blob, max_bytes)]


def _gcs_item(blob, max_bytes):
    url = f"gs://{blob.bucket.name}/{blob.name}"

    def load():
        from google.api_core import exceptions as api
        if blob.size is not None and blob.size > max_bytes:
            raise InputError(f"object of {blob.size:,} bytes is over the limit of {max_bytes:,} (--max_bytes)")
        try:
            return "bytes", blob.download_as_bytes()
        except (api.NotFound, api.Forbidden, api.Unauthorized) as error:
            raise InputError(f"unreadable: {error.__class__.__name__}") from None
        except transient_errors() as error:
            raise InputError(f"unreadable (transient: {error.__class__.__name__}; rerun)", transient=True) from None
    return Item(url, load)


def _jsonl(name, opener):
    """The instances of a JSONL file, streamed line by line; blank lines are not instances."""
    with opener() as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            yield _instance(f"{name}:{number}", line)


def _instance(default_name, line):
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
    from google.api_core import exceptions as api
    try:
        return list(itertools.islice(items, count))
    except transient_errors() as error:
        raise RetryableError(f"listing or reading the inputs failed ({error.__class__.__name__}): rerun.") from None
    except (api.NotFound, api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"cannot list or read the inputs ({error.__class__.__name__}).") from None
    except OSError as error:
        raise UserError(f"cannot read the inputs: {error}.") from None


# ------------------------------------------------------------------------------------------ preprocessing

_preprocessors = {}
_models = {}


def preprocessor(max_pixels):
    """One Preprocessor per limit and process: its tf.functions are traced once."""
    if max_pixels not in _preprocessors:
        _preprocessors[max_pixels] = Preprocessor(max_pixels)
    return _preprocessors[max_pixels]


class Preprocessor:
    """Encoded bytes or pixel lists -> uint8 [28, 28], through trainer.photo (the serving_bytes code path).

    A batch at a time: the headers of all its files in one call, then every file that passed decoded and
    converted in one call; only when that call fails (a corrupt file among them) is each decoded on its own, to
    find which one. Python-side dispatch, not the decoding, is what one call per image would cost.
    """

    def __init__(self, max_pixels):
        import tensorflow as tf
        from trainer import photo
        self.tf, self.photo, self.max_pixels = tf, photo, max_pixels
        strings = tf.TensorSpec([None], tf.string)
        # Traced once, here, in one thread.
        def trace(function, spec):
            return tf.function(function, autograph=False).get_concrete_function(spec)

        self._headers = trace(lambda c: tf.map_fn(photo.header, c, fn_output_signature=(tf.int64,) * 3), strings)
        self._from_bytes = trace(lambda c: photo.batch_from_bytes(c, max_pixels), strings)
        self._from_colour = trace(lambda a: photo.to_fashion_mnist(photo.to_rgba(a)),
                                  tf.TensorSpec([None, None, None], tf.uint8))

    def batch(self, loaded):
        """[("bytes", b) | ("array", pixels) | InputError] -> [(uint8 [28, 28] or None, InputError or None)]."""
        results = [None] * len(loaded)
        encoded = []
        for i, value in enumerate(loaded):
            if isinstance(value, InputError):
                results[i] = (None, value)
            elif value[0] == "array":
                results[i] = self._guard(self.array, value[1])
            elif not value[1]:
                results[i] = (None, InputError("empty file"))
            else:
                encoded.append(i)
        if encoded:
            headers = self._headers(self.tf.constant([loaded[i][1] for i in encoded]))
            kinds, heights, widths = (v.numpy() for v in headers)
            readable = []
            for i, kind, height, width in zip(encoded, kinds, heights, widths):
                problem = self._check_header(loaded[i][1], int(kind), int(height), int(width))
                if problem:
                    results[i] = (None, problem)
                else:
                    readable.append(i)
            for i, image in zip(readable, self._decode(readable, loaded)):
                results[i] = image
        return results

    def _check_header(self, contents, kind, height, width):
        if kind < 0:
            known = next((name for magic, name in MAGIC.items() if contents.startswith(magic)), None)
            if known and len(contents) < 64:
                return InputError(f"truncated {known}: {len(contents)} bytes, not even a whole header")
            return InputError("not an image this model reads (PNG, JPEG, GIF, BMP or WebP)")
        name = self.photo.FORMATS[kind]
        if height * width > self.max_pixels:
            return InputError(f"refused before decoding: the {name} header declares {width:,} x {height:,} = "
                              f"{width * height:,} pixels, over the limit of {self.max_pixels:,} (--max_pixels); "
                              "a decompression bomb?")
        if height == 0 or width == 0:
            return InputError(f"the {name} header declares an empty image ({width} x {height})")
        return None

    def _decode(self, indices, loaded):
        tf = self.tf
        if not indices:
            return []
        try:
            images = self._from_bytes(tf.constant([loaded[i][1] for i in indices])).numpy()
            return [(image, None) for image in images]
        except tf.errors.InvalidArgumentError:
            if len(indices) == 1:
                try:
                    image = self._from_bytes(tf.constant([loaded[indices[0]][1]])).numpy()[0]
                    return [(image, None)]
                except tf.errors.InvalidArgumentError as error:
                    kind = int(self._headers(tf.constant([loaded[indices[0]][1]]))[0].numpy()[0])
                    return [(None, InputError(f"cannot decode this {self.photo.FORMATS[kind]} (truncated or "
                                              f"corrupt?): {tf_message(error)}"))]
            half = len(indices) // 2  # find the bad ones by halving
            return self._decode(indices[:half], loaded) + self._decode(indices[half:], loaded)

    @staticmethod
    def _guard(function, value):
        try:
            return function(value), None
        except InputError as error:
            return None, error

    def array(self, pixels):
        import numpy as np
        tf = self.tf
        try:
            array = np.asarray(pixels)
        except ValueError:
            raise InputError("pixels are not a rectangular array") from None
        if array.dtype.kind not in "iuf" or array.size == 0 or array.min() < 0 or array.max() > 255 \
                or np.any(array != np.round(array)):
            raise InputError("pixels must be whole numbers from 0 to 255")
        if array.shape not in ((28, 28), (28, 28, 1), (28, 28, 3), (28, 28, 4)):
            raise InputError(f"pixels must be 28x28, 28x28x1, 28x28x3 (RGB) or 28x28x4 (RGBA); got "
                             f"{'x'.join(map(str, array.shape))}: send other images as image_bytes")
        array = array.astype(np.uint8)
        if array.ndim == 2 or array.shape[-1] == 1:  # grey: Fashion-MNIST's own pixels, as serving_default
            return array.reshape(28, 28)
        return self._from_colour(tf.constant(array)).numpy()


def tf_message(error):
    """The useful line of a TensorFlow op error (not its graph-node decorations)."""
    import re
    text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\]", "", str(getattr(error, "message", error)))
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if line.startswith("assertion failed:"):
            return line[len("assertion failed:"):].strip().strip("[]").split("]")[0]
    useful = [line for line in lines if line and not line.startswith(("[[", "Detected at", "File ", "Graph execution"))
              and "{{" not in line]
    return (useful[-1] if useful else lines[0] if lines else "unknown error")[:300]


# ------------------------------------------------------------------------------------------------- model

def load_model(model_dir, scratch):
    """The SavedModel's signature that takes `images` (uint8 arrays), from a run folder or its saved_model/."""
    import tensorflow as tf
    local = model_dir
    if is_gcs(model_dir):
        local = _download_model(model_dir, os.path.join(scratch, "model"))
    elif not os.path.isdir(model_dir):
        raise UserError(f"--model_dir={model_dir}: no such folder.")
    if os.path.exists(os.path.join(local, "saved_model", "saved_model.pb")):
        local = os.path.join(local, "saved_model")
    if not os.path.exists(os.path.join(local, "saved_model.pb")):
        raise UserError(f"--model_dir={model_dir} holds no SavedModel: give a finished run's folder (with "
                        "saved_model/) or its saved_model/ itself.")
    key = (os.path.abspath(local), os.path.getmtime(os.path.join(local, "saved_model.pb")))
    if is_gcs(model_dir) or key not in _models:  # a local model loads once per process
        _models.clear()
        _models[key] = tf.saved_model.load(local)
    loaded = _models[key]
    for name in ("serving_default", "serving_images"):
        signature = loaded.signatures.get(name)
        if signature is not None and "images" in signature.structured_input_signature[1]:
            return loaded, signature
    raise UserError(f"--model_dir={model_dir}: its SavedModel has no signature that takes images.")


def _download_model(url, target):
    from google.api_core import exceptions as api
    bucket_name, prefix = split_gcs(url.rstrip("/"))
    client = gcs_client()
    try:
        found = 0
        for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
            relative = blob.name[len(prefix):].lstrip("/") if prefix else blob.name
            if not (relative.startswith("saved_model/") or relative == "saved_model.pb"
                    or relative.startswith("variables/") or relative.startswith("assets/")
                    or relative == "fingerprint.pb"):
                continue  # the run's logs, metrics and test predictions are not needed
            path = os.path.join(target, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            blob.download_to_filename(path)
            found += 1
    except api.NotFound:
        raise UserError(f"--model_dir={url}: bucket gs://{bucket_name} does not exist.") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"--model_dir={url}: not allowed to read ({error.__class__.__name__}).") from None
    except transient_errors() as error:
        raise RetryableError(f"downloading --model_dir={url} failed ({error.__class__.__name__}): rerun.") from None
    if not found:
        raise UserError(f"--model_dir={url} holds no SavedModel (nothing under saved_model/).")
    return target


# ------------------------------------------------------------------------------------------------ output

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


# -------------------------------------------------------------------------------------------------- run

@dataclasses.dataclass
class Summary:
    read: int = 0
    predicted: int = 0
    refused: int = 0
    transient: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # loading the model and tracing the image functions, before the first input

    @property
    def rate(self):
        """Inputs per second once the model was loaded."""
        working = self.seconds - self.load_seconds
        return self.read / working if working > 0 else 0.0

    def line(self):
        return (f"{self.read:,} read, {self.predicted:,} predicted, {self.refused:,} refused in "
                f"{self.seconds:.1f} s (model loaded in {self.load_seconds:.1f} s, then {self.rate:,.0f} images/s)")


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, else a new line every `every` seconds."""

    def __init__(self, stream=None, every=10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = 0.5 if self.tty else every
        self.last = time.monotonic()

    def update(self, summary, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        text = f"{PROGRAM}: {summary.line()}"
        self.stream.write(f"\r{text}\033[K" if self.tty else f"{text}\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def predict(model_dir, inputs, output, batch_size=256, readers=8, max_pixels=None, max_bytes=DEFAULT_MAX_BYTES,
            progress=None):
    """Predicts every input into `output`; returns the Summary. Raises UserError / RetryableError."""
    import numpy as np
    from trainer import photo
    max_pixels = max_pixels or photo.MAX_PIXELS
    progress = progress or Progress()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmnist-predict-") as scratch:
        items = expand(inputs, max_bytes)  # a missing input fails here, before anything else
        out = Output(output)
        try:
            loaded, serve = load_model(model_dir, scratch)
            preprocess = preprocessor(max_pixels)
            warm = preprocess.tf.zeros([1, 28, 28], preprocess.tf.uint8)  # first calls run slower: not in images/s
            serve(images=warm)
            preprocess.batch([("bytes", preprocess.tf.io.encode_png(warm[0, :, :, None]).numpy())])
            summary = Summary(load_seconds=time.perf_counter() - started)

            def read(item):
                try:
                    return item.load()
                except InputError as error:
                    return error

            with concurrent.futures.ThreadPoolExecutor(max_workers=readers) as pool:
                while True:
                    chunk = take(items, batch_size)
                    if not chunk:
                        break
                    results = preprocess.batch(list(pool.map(read, chunk)))
                    ok = [i for i, (image, _) in enumerate(results) if image is not None]
                    predictions = {}
                    if ok:
                        batch = np.stack([results[i][0] for i in ok])
                        answer = serve(images=preprocess.tf.constant(batch))
                        probabilities = answer["probabilities"].numpy()
                        class_ids = answer["class_id"].numpy()
                        class_names = answer["class_name"].numpy()
                        for row, i in enumerate(ok):
                            predictions[i] = {"class_name": class_names[row].decode(),
                                              "class_id": int(class_ids[row]),
                                              "probabilities": [round(float(p), 6) for p in probabilities[row]]}
                    for i, item in enumerate(chunk):
                        if i in predictions:
                            out.write({"name": item.name, **predictions[i]})
                        else:
                            error = results[i][1]
                            out.write({"name": item.name, "error": str(error)})
                            summary.refused += 1
                            summary.transient += error.transient
                    summary.read += len(chunk)
                    summary.predicted += len(predictions)
                    summary.seconds = time.perf_counter() - started
                    progress.update(summary)
            summary.seconds = time.perf_counter() - started
            if summary.read == 0:
                raise UserError(f"--input ({', '.join(inputs)}) holds no image: folders and prefixes are searched "
                                f"for {', '.join(IMAGE_EXTENSIONS)} files.")
            out.publish()
            if progress.tty:
                progress.update(summary, force=True)
            progress.close()
            return summary
        finally:
            out.discard()


# ------------------------------------------------------------------------------------------------ flags

def define_flags():
    if "model_dir" in FLAGS:
        return
    flags.DEFINE_string("model_dir", None, "A finished run's folder (or its saved_model/), local or gs://.")
    flags.DEFINE_multi_string(
        "input", None,
        "What to predict, in this order (repeat the flag or separate with commas; a value naming an existing local "
        "file or folder is taken whole): image files, folders (searched "
        "recursively for PNG, JPEG, GIF, BMP and WebP files), globs (quoted), gs:// objects or prefixes, or JSONL "
        "files of instances ({\"image_bytes\": {\"b64\": ...}}, {\"b64\": ...} or 28x28 pixels; \"key\" names one).")
    flags.DEFINE_string("output", None, "The JSONL file of predictions, one line per input: a local path or gs://.")
    flags.DEFINE_integer("batch_size", 256, "Images per model call (and read ahead at most).")
    flags.DEFINE_integer("readers", 8, "Threads reading and decoding images.")
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "An image whose header declares more pixels than this is refused before decoding.")
    flags.DEFINE_integer("max_bytes", DEFAULT_MAX_BYTES, "A file larger than this is refused before reading it.")
    for name in ("model_dir", "input", "output"):
        flags.mark_flag_as_required(name)
    flags.register_validator("batch_size", lambda v: 1 <= v <= 8192,
                             message="--batch_size must be from 1 to 8192, e.g. --batch_size=256.")
    flags.register_validator("readers", lambda v: 1 <= v <= 256,
                             message="--readers must be from 1 to 256, e.g. --readers=8.")
    flags.register_validator("max_pixels", lambda v: v > 0, message="--max_pixels must be a positive number.")
    flags.register_validator("max_bytes", lambda v: v > 0, message="--max_bytes must be a positive number.")
    for name in ("model_dir", "output"):
        flags.register_validator(
            name, lambda v: v is None or (v.strip() != "" and (not is_gcs(v) or len(v) > 5 and v[5] != "/")),
            message=f"--{name} must be a local path or gs://BUCKET/PATH.")
    flags.register_validator("input", lambda v: v is None or all(s.strip() for s in input_specs(v)),
                             message="--input must name files, folders, globs, gs:// paths or JSONL files.")


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


def _fail(message, status=PERMANENT):
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    sys.exit(status)


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")


def parse_flags(argv):
    """absl's parsing, with the contract's status 2 for a bad flag (absl's own is 1) and a help of our flags."""
    define_flags()
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(f"Usage: {PROGRAM} (or python -m trainer.predict) --model_dir=RUN --input=IMAGES "
              f"--output=predictions.jsonl\n\n{__doc__.split(chr(10) + chr(10), 1)[1]}")
        for name in FLAG_NAMES:
            flag = FLAGS[name]
            default = f" (default: {flag.default})" if flag.default is not None else " (required)"
            print(f"  --{name}: {flag.help}{default}")
        sys.exit(FINISHED)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(str(error))


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a --flag (see --help).")
    try:
        from trainer import logs  # the trainer's quiet start-up, where this version of the trainer has it
        with logs.quiet_native_startup():
            import tensorflow  # noqa: F401
        logs.configure()
    except ImportError:
        pass
    try:
        summary = predict(FLAGS.model_dir, input_specs(FLAGS.input), FLAGS.output, batch_size=FLAGS.batch_size,
                          readers=FLAGS.readers, max_pixels=FLAGS.max_pixels, max_bytes=FLAGS.max_bytes)
    except UserError as error:
        _fail(str(error))
    except RetryableError as error:
        _fail(str(error), RETRY)
    print(f"{PROGRAM}: {summary.line()}; predictions in {FLAGS.output}")
    status, message = outcome(summary, FLAGS.output)
    if message:
        _fail(message, status)
    sys.exit(status)


def outcome(summary, output):
    """The exit status of a finished run, and the one-line error that goes with a non-zero one."""
    if summary.predicted == 0:
        status = RETRY if summary.transient == summary.refused else PERMANENT
        return status, f"nothing could be predicted: every input was refused (the reasons are in {output})."
    if summary.transient:
        return RETRY, (f"{summary.transient:,} inputs could not be read for a transient storage error: rerun to "
                       "predict them too.")
    return FINISHED, None


def run():
    """Console-script entry point (`fmnist-predict`)."""
    # A corrupt image is reported on its own output line; TensorFlow's native warning about the failed decode
    # would repeat it on stderr for every such image. (trainer/__init__.py set the default of 1 just before.)
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "1":
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
