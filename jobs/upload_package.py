#!/usr/bin/env python3
"""Uploads the trainer's source package to Cloud Storage for a Vertex AI python-package job; prints its gs:// URI.

    python3 jobs/upload_package.py dist/fmnist_trainer-0.1.0.tar.gz gs://BUCKET/fmnist/packages/

The object is PREFIX/<file name>. Uses google-cloud-storage with Application Default Credentials (`gcloud auth
application-default login`), or the emulator that STORAGE_EMULATOR_HOST names. jobs/submit_vertex.sh python-package
runs it. A problem (no such file, not a gs:// prefix, no credentials, no bucket) is one line on stderr and exit
status 2; the upload itself is retried by the client library.
"""

import argparse
import os
import sys


def parse_prefix(prefix):
    """(bucket, object prefix ending in / or empty) of gs://BUCKET[/PATH]."""
    if not prefix.startswith("gs://") or not prefix[5:].split("/")[0]:
        raise ValueError(f"{prefix!r} is not a gs://BUCKET[/PATH] prefix")
    bucket, _, path = prefix[5:].partition("/")
    path = path.strip("/")
    return bucket, f"{path}/" if path else ""


def upload(package, prefix, project=None):
    """Uploads `package` under `prefix`; returns the object's gs:// URI."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud import storage

    if not os.path.isfile(package):
        raise ValueError(f"no package file {package}")
    bucket_name, path = parse_prefix(prefix)
    try:
        client = storage.Client(project=project)
        bucket = client.bucket(bucket_name)
        if not bucket.exists():
            raise ValueError(f"bucket gs://{bucket_name} does not exist (or you cannot see it)")
        blob = bucket.blob(path + os.path.basename(package))
        blob.upload_from_filename(package, content_type="application/gzip")
    except auth_exceptions.DefaultCredentialsError:
        raise ValueError("no Google Cloud credentials: run `gcloud auth application-default login`") from None
    except exceptions.Forbidden as error:
        raise ValueError(f"not allowed to write gs://{bucket_name}: {error.message}") from None
    return f"gs://{bucket_name}/{blob.name}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the sdist (.tar.gz) or wheel to upload")
    parser.add_argument("prefix", help="gs://BUCKET/PATH/ to upload it under")
    parser.add_argument("--project", default=os.environ.get("PROJECT_ID") or None,
                        help="the Google Cloud project of the client (default $PROJECT_ID, else the credentials')")
    args = parser.parse_args(argv)
    try:
        print(upload(args.package, args.prefix, args.project))
    except ValueError as error:
        print(f"upload_package: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
