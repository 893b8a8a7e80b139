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

Each image goes through the same rule and conversion as the SavedModel's `serving_bytes` (trainer/serving/photo.py:
28x28 on a dark background as is, anything else converted as Fashion-MNIST's photos were), then the model's
`serving_default`. Inputs stream through in batches (`--batch_size`), read and decoded by `--readers` threads, so
memory stays bounded for a million files; a progress line goes to stderr and a summary (read, predicted, refused,
images/s) to stdout at the end.

Exit status (trainer/errors.py's contract): 0 when at least one input was predicted (refused inputs are lines
with an `error`); 2 when nothing could be predicted, the model or an input is missing, the output cannot be
written, or a flag is wrong (one line, no traceback); 75 when a transient storage error (after retries) got in
the way: rerun the same command.
"""

import concurrent.futures
import dataclasses
import os
import sys
import tempfile
import time
from typing import Optional

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer import cli, settings, storage
from trainer.errors import FINISHED, PERMANENT, RETRY, UserError
from trainer.settings import setting
from trainer.serving import model as saved_model
from trainer.serving.inputs import IMAGE_EXTENSIONS, InputError, expand, input_specs, take
from trainer.serving.output import Output
from trainer.serving.preprocess import preprocessor

PROGRAM = "fmnist-predict"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000  # photo.MAX_PIXELS, without importing TensorFlow to parse the flags



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
            progress=None, overwrite=False):
    """Predicts every input into `output`; returns the Summary. Raises UserError / RetryableError."""
    import numpy as np
    from trainer.serving import photo
    max_pixels = max_pixels or photo.MAX_PIXELS
    progress = progress or Progress()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmnist-predict-") as scratch:
        items = expand(inputs, max_bytes)  # a missing input fails here, before anything else
        out = Output(output, overwrite=overwrite, inputs=inputs)
        try:
            loaded, serve = saved_model.load(model_dir, scratch)
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


# ----------------------------------------------------------------------------------------- command line

def _location(name):
    return dict(check=storage.well_formed, message=f"--{name} must be a local path or gs://BUCKET/PATH.")


@dataclasses.dataclass(frozen=True)
class Settings:
    """fmnist-predict's flags."""
    model_dir: Optional[str] = setting(None, "A finished run's folder (or its saved_model/), local or gs://.",
                                       required=True, **_location("model_dir"))
    input: Optional[list] = setting(
        None, "What to predict, in this order (repeat the flag or separate with commas; a value naming an existing "
              "local file or folder is taken whole): image files, folders (searched recursively for PNG, JPEG, GIF, "
              "BMP and WebP files), globs (quoted), gs:// objects or prefixes, or JSONL files of instances "
              "({\"image_bytes\": {\"b64\": ...}}, {\"b64\": ...} or 28x28 pixels; \"key\" names one).",
        required=True, check=lambda v: all(s.strip() for s in input_specs(v)),
        message="--input must name files, folders, globs, gs:// paths or JSONL files.")
    output: Optional[str] = setting(None, "The JSONL file of predictions, one line per input: a local path or gs://.",
                                    required=True, **_location("output"))
    batch_size: int = setting(256, "Images per model call (and read ahead at most).", check=lambda v: 1 <= v <= 8192,
                              message="--batch_size must be from 1 to 8192, e.g. --batch_size=256.")
    readers: int = setting(8, "Threads reading and decoding images.", check=lambda v: 1 <= v <= 256,
                           message="--readers must be from 1 to 256, e.g. --readers=8.")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS,
                              "An image whose header declares more pixels than this is refused before decoding.",
                              check=lambda v: v > 0, message="--max_pixels must be a positive number.")
    max_bytes: int = setting(DEFAULT_MAX_BYTES, "A file, gs:// object or JSONL payload larger than this is refused "
                                                "before it is read (a JSONL line: its base64).",
                             check=lambda v: v > 0, message="--max_bytes must be a positive number.")
    overwrite: bool = setting(False, "Replace an existing --output instead of refusing (never an input).")


COMMAND = cli.Command(PROGRAM, f"{PROGRAM} (or python -m trainer.predict) --model_dir=RUN --input=IMAGES "
                               "--output=predictions.jsonl", description=__doc__.split("\n\n", 1)[1],
                      settings=settings.declared(Settings))


def main(arguments):
    """The job with the parsed flags: predicts, prints the summary, returns the exit status."""
    if arguments:
        raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
    values = COMMAND.values()
    from trainer import logs  # the trainer's quiet start-up
    with logs.quiet_native_startup():
        import tensorflow  # noqa: F401
    logs.configure()
    summary = predict(values["model_dir"], input_specs(values["input"]), values["output"],
                      batch_size=values["batch_size"], readers=values["readers"], max_pixels=values["max_pixels"],
                      max_bytes=values["max_bytes"], overwrite=values["overwrite"])
    print(f"{PROGRAM}: {summary.line()}; predictions in {values['output']}")
    status, message = outcome(summary, values["output"])
    return cli.report(PROGRAM, message, status) if message else status


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
    COMMAND.run(main)


if __name__ == "__main__":
    run()
