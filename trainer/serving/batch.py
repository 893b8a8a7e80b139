"""Batch prediction: every input read, checked, decoded and predicted in bounded batches, and one JSONL line per
input, written complete or not at all (the command is `trainer.commands.predict`, console script `fmnist-predict`).

Each image goes through the same rule and conversion as the SavedModel's `serving_bytes` (trainer/serving/photo.py),
then the model's `serving_default`; `--readers` threads read and decode ahead, so memory stays bounded for a
million files.
"""

import concurrent.futures
import dataclasses
import sys
import tempfile
import time

import trainer  # noqa: F401  (selects tf-keras before TensorFlow loads)
from trainer.errors import UserError
from trainer.serving import model as saved_model
from trainer.serving.inputs import IMAGE_EXTENSIONS, InputError, expand, take
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
