"""The Google Cloud SDK's aiplatform v1 client, read with gcloud's own Python: the Vertex AI schemas in jobs/ are
compared field by field with it (tests/launch/test_launch_vertex.py, tests/launch/test_serving_launch.py)."""

import pathlib
import shutil
import sys


def root():
    """The SDK's install folder, or None where gcloud (with its aiplatform v1 client) is not installed."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    found = pathlib.Path(gcloud).resolve().parent.parent
    client = found / "lib" / "googlecloudsdk" / "generated_clients" / "apis" / "aiplatform" / "v1"
    return found if client.is_dir() else None


def python(sdk_root):
    """gcloud's bundled Python where it has one, else this one."""
    bundled = sdk_root / "platform" / "bundledpythonunix" / "bin" / "python3"
    return bundled if bundled.exists() else pathlib.Path(sys.executable)


# The start of a script run as `PYTHON -c SCRIPT SDK_ROOT` with a JSON request on stdin: the client's messages (`m`),
# gcloud's importers, each field's kind as the schemas spell it, and the fields a parsed spec did not recognize.
PRELUDE = r'''
import json, sys
root = sys.argv[1]
sys.path[:0] = [root + "/lib", root + "/lib/third_party"]
from apitools.base.protorpclite import messages as pm
from googlecloudsdk.core import yaml as gyaml
from googlecloudsdk.api_lib.util import messages as messages_util
from googlecloudsdk.generated_clients.apis.aiplatform.v1 import aiplatform_v1_messages as m
from googlecloudsdk.command_lib.export import util as export_util

def kind(field):
    if isinstance(field, pm.EnumField):
        return {"enum": sorted(field.type.names())}
    if isinstance(field, pm.MessageField):
        return {"message": field.type.__name__}
    return {pm.StringField: "string", pm.BooleanField: "boolean", pm.IntegerField: "integer",
            pm.FloatField: "number", pm.BytesField: "string"}[type(field)]

def unrecognized(message, path=""):
    found = [path + "/" + name for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        values = getattr(message, field.name)
        values = values if field.repeated else [values]
        for i, value in enumerate(values):
            if isinstance(value, pm.Message):
                found += unrecognized(value, f"{path}/{field.name}[{i}]")
    return found

request = json.load(sys.stdin)
'''
