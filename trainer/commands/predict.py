"""Batch prediction: `python -m trainer.commands.predict --model_dir=RUN --input=IMAGES --output=predictions.jsonl`
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

import dataclasses
import os
from typing import Optional

from trainer import storage
from trainer.commands import cli
from trainer.config import declare
from trainer.config.declare import setting
from trainer.errors import FINISHED, PERMANENT, RETRY, UserError
from trainer.serving.batch import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, PROGRAM, predict
from trainer.serving.inputs import input_specs



@dataclasses.dataclass(frozen=True)
class Settings:
    """fmnist-predict's flags."""
    model_dir: Optional[str] = setting(None, "A finished run's folder (or its saved_model/), local or gs://.",
                                       required=True, **storage.location("model_dir"))
    input: Optional[list] = setting(
        None, "What to predict, in this order (repeat the flag or separate with commas; a value naming an existing "
              "local file or folder is taken whole): image files, folders (searched recursively for PNG, JPEG, GIF, "
              "BMP and WebP files), globs (quoted), gs:// objects or prefixes, or JSONL files of instances "
              "({\"image_bytes\": {\"b64\": ...}}, {\"b64\": ...} or 28x28 pixels; \"key\" names one).",
        required=True, check=lambda v: all(s.strip() for s in input_specs(v)),
        message="--input must name files, folders, globs, gs:// paths or JSONL files.")
    output: Optional[str] = setting(None, "The JSONL file of predictions, one line per input: a local path or gs://.",
                                    required=True, **storage.location("output"))
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


COMMAND = cli.Command(PROGRAM, f"{PROGRAM} (or python -m trainer.commands.predict) --model_dir=RUN --input=IMAGES "
                               "--output=predictions.jsonl", description=__doc__.split("\n\n", 1)[1],
                      settings=declare.declared(Settings))


def main(argv):
    """The command on `argv` (the program's name first); returns the exit status."""
    return COMMAND.main(predict_inputs, argv)


def predict_inputs(arguments):
    """The job with the parsed flags: predicts, prints the summary, returns the exit status."""
    if arguments:
        raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
    values = COMMAND.values()
    from trainer.monitoring import logs  # the trainer's quiet start-up
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
    COMMAND.run(predict_inputs)


if __name__ == "__main__":
    run()
