"""The SavedModel a run exports (`trainer.serving.signatures`), and the command that re-exports one:

`python -m trainer.export --model_dir=RUN --output_dir=DIR --default_signature=serving_bytes` writes a copy of a
run's SavedModel whose *default* signature takes encoded images: for Vertex AI batch prediction and endpoints,
which only ever call `serving_default` (docs/serving.md).

Exit status as the trainer's: 0 written; 2 a mistake to fix (no SavedModel there, no bucket, no access); 75 a
transient storage error (rerun).
"""

import dataclasses
import os
import sys
import tempfile
from typing import Optional

from trainer import cli, outputs, settings, storage
from trainer.errors import UserError
from trainer.serving import SIGNATURES, model as saved_model
from trainer.settings import setting


def export_saved_model(model, input_shape, path, test_time_augmentation="none"):
    """The run's SavedModel with its two signatures (`trainer.serving.signatures`); TensorFlow loads only here,
    so that this command's flags are checked first."""
    from trainer.serving import signatures
    return signatures.export_saved_model(model, input_shape, path, test_time_augmentation)


@dataclasses.dataclass(frozen=True)
class Settings:
    """python -m trainer.export's flags."""
    model_dir: Optional[str] = setting(None, "A run folder or its saved_model/, local or gs://.", required=True,
                                       check=storage.well_formed,
                                       message="--model_dir must be a local path or gs://BUCKET/PATH.")
    output_dir: Optional[str] = setting(None, "Where the copy goes, local or gs://.", required=True,
                                        check=storage.well_formed,
                                        message="--output_dir must be a local path or gs://BUCKET/PATH.")
    default_signature: str = setting(
        "serving_bytes", "Which signature becomes serving_default (serving_default: only add serving_bytes to a "
                         "SavedModel exported before it existed).", choices=SIGNATURES)


COMMAND = cli.Command("python -m trainer.export", "python -m trainer.export --model_dir=RUN --output_dir=DIR "
                      "[--default_signature=serving_bytes]", description=__doc__.split("\n\n", 1)[1],
                      settings=settings.declared(Settings))


def main(argv):
    """The command on `argv` (its flags, without the program's name); returns the exit status."""
    return COMMAND.main(copy, [COMMAND.program, *argv])


def copy(arguments):
    if arguments:
        raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
    values = COMMAND.values()
    output_dir = values["output_dir"]
    from trainer import logs
    with logs.quiet_native_startup():
        from trainer.serving.signatures import with_default_signature
    with tempfile.TemporaryDirectory(prefix="fmnist-export-") as scratch:
        source = saved_model.locate(values["model_dir"], scratch)
        target = os.path.join(scratch, "target") if storage.is_gcs(output_dir) else output_dir
        with_default_signature(source, target, values["default_signature"])
        if storage.is_gcs(output_dir):
            url = output_dir.rstrip("/")
            with storage.errors(url, "write", doing="uploading to", name=f"--output_dir={url}"):
                outputs.GcsOutput(url).upload_folder(target)
    bytes_default = values["default_signature"] == "serving_bytes"
    takes = "image_bytes (encoded images)" if bytes_default else "images (uint8 arrays)"
    print(f"wrote {output_dir}: serving_default takes {takes}; signatures serving_default, serving_bytes, "
          "serving_images")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
