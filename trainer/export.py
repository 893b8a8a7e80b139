"""The SavedModel a run exports (`trainer.serving.signatures`), and the command that re-exports one:

`python -m trainer.export --model_dir=RUN --output_dir=DIR --default_signature=serving_bytes` writes a copy of a
run's SavedModel whose *default* signature takes encoded images: for Vertex AI batch prediction and endpoints,
which only ever call `serving_default` (docs/serving.md).
"""

import sys

from trainer.serving.signatures import SIGNATURES, export_saved_model, with_default_signature  # noqa: F401


def main(argv):
    """`python -m trainer.export --model_dir=RUN --output_dir=DIR [--default_signature=serving_bytes]`.

    Exit status as the trainer's: 0 written; 2 a mistake to fix (no SavedModel there, no bucket, no access);
    75 a transient storage error (rerun).
    """
    import argparse
    import os
    import tempfile

    from trainer.errors import PERMANENT, RETRY, RetryableError, UserError
    from trainer.storage import is_gcs
    from trainer.serving import model
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description=with_default_signature.__doc__)
    parser.add_argument("--model_dir", required=True, help="a run folder or its saved_model/, local or gs://")
    parser.add_argument("--output_dir", required=True, help="where the copy goes, local or gs://")
    parser.add_argument("--default_signature", default="serving_bytes", choices=SIGNATURES,
                        help="which signature becomes serving_default (serving_default: only add serving_bytes "
                             "to a SavedModel exported before it existed)")
    args = parser.parse_args(argv)

    def fail(message, status=PERMANENT):
        print(f"python -m trainer.export: error: {message}", file=sys.stderr)
        return status

    with tempfile.TemporaryDirectory(prefix="fmnist-export-") as scratch:
        try:
            source = model.locate(args.model_dir, scratch)
            target = os.path.join(scratch, "target") if is_gcs(args.output_dir) else args.output_dir
            with_default_signature(source, target, args.default_signature)
            if is_gcs(args.output_dir):
                _upload(target, args.output_dir.rstrip("/"))
        except UserError as error:
            return fail(str(error))
        except RetryableError as error:
            return fail(str(error), RETRY)
    takes = "image_bytes (encoded images)" if args.default_signature == "serving_bytes" else "images (uint8 arrays)"
    print(f"wrote {args.output_dir}: serving_default takes {takes}; signatures serving_default, serving_bytes, "
          "serving_images")
    return 0


def _upload(folder, url):
    from trainer import outputs, storage
    with storage.errors(url, "write", doing="uploading to", name=f"--output_dir={url}"):
        outputs.GcsOutput(url).upload_folder(folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
