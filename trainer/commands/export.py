"""Re-exports a run's SavedModel (`trainer.serving.signatures`) with another default signature:

`python -m trainer.commands.export --model_dir=RUN --output_dir=DIR --default_signature=serving_bytes` writes a copy of
a run's SavedModel whose *default* signature takes encoded images: for Vertex AI batch prediction and endpoints, which
only ever call `serving_default` (docs/serving.md).

Exit status as the trainer's: 0 written; 2 a mistake to fix (no SavedModel there, no bucket, no access); 75 a
transient storage error (rerun).
"""

import dataclasses
import os
import sys
import tempfile
from typing import Optional

from trainer.commands import cli
from trainer.storage import outputs
from trainer.config import declare
from trainer import storage
from trainer.errors import UserError
from trainer.serving import SIGNATURES, model as saved_model
from trainer.config.declare import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    """python -m trainer.commands.export's flags."""
    model_dir: Optional[str] = setting(None, "A run folder or its saved_model/, local or gs://.", required=True,
                                       **storage.location("model_dir"))
    output_dir: Optional[str] = setting(None, "Where the copy goes, local or gs://.", required=True,
                                        **storage.location("output_dir"))
    default_signature: str = setting(
        "serving_bytes", "Which signature becomes serving_default (serving_default: only add serving_bytes to a "
                         "SavedModel exported before it existed).", choices=SIGNATURES)


COMMAND = cli.Command("export", "python -m trainer.commands.export --model_dir=RUN --output_dir=DIR "
                                "[--default_signature=serving_bytes]", description=__doc__.split("\n\n", 1)[1],
                      settings=declare.declared(Settings))


def main(argv):
    """The command on `argv` (the program's name first); returns the exit status."""
    return COMMAND.main(copy, argv)


def copy(arguments):
    if arguments:
        raise UserError(f"unexpected arguments {' '.join(arguments)!r}: every setting is a --flag (see --help).")
    values = COMMAND.values()
    output_dir = values["output_dir"]
    from trainer.monitoring import logs
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
    sys.exit(main(sys.argv))
