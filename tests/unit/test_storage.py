"""trainer.storage: Cloud Storage's errors mapped onto the exit-code contract, the write probe, atomic files."""

import os
import re

import pytest
from google.api_core import exceptions as api

from trainer import storage
from trainer.errors import RetryableError, UserError


def raising(error):
    with storage.errors("gs://b/run", "write", doing="uploading", name="--output_dir=gs://b/run"):
        raise error


@pytest.mark.parametrize("error, kind, text", [
    (api.ServiceUnavailable("later"), RetryableError, "uploading --output_dir=gs://b/run failed (ServiceUnavailable"),
    (api.TooManyRequests("slow down"), RetryableError, "rerun"),
    (ConnectionError("refused"), RetryableError, "rerun"),
    (api.NotFound("no bucket"), UserError, "bucket gs://b does not exist"),
    (api.Forbidden("no"), UserError, "needs roles/storage.objectAdmin"),
    (api.Unauthorized("no"), UserError, "cannot write --output_dir=gs://b/run (Unauthorized)"),
])
def test_cloud_storage_errors_map_onto_the_exit_code_contract(error, kind, text):
    with pytest.raises(kind, match=re.escape(text)):
        raising(error)


def test_other_errors_pass_through_as_crashes():
    with pytest.raises(KeyError):
        raising(KeyError("a bug"))


def test_a_read_names_the_viewer_role():
    with pytest.raises(UserError, match="roles/storage.objectViewer"):
        with storage.errors("gs://b/x", "read"):
            raise api.Forbidden("no")


def test_an_atomic_file_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with pytest.raises(ValueError):
        with storage.AtomicFile(str(target)) as f:
            f.write("half")
            raise ValueError("crash while writing")
    assert not target.exists() and os.listdir(target.parent) == []
    with storage.AtomicFile(str(target)) as f:
        f.write("whole")
    assert target.read_text() == "whole" and os.listdir(target.parent) == ["result.json"]


def test_the_write_probe_creates_a_folder_and_refuses_a_file(tmp_path):
    storage.check_writable(str(tmp_path / "new"), "--output_dir")
    assert (tmp_path / "new").is_dir() and os.listdir(tmp_path / "new") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        storage.check_writable(str(tmp_path / "file"), "--output_dir")


@pytest.mark.parametrize("value, ok", [("out/run", True), ("gs://b/p", True), ("gs://b", True), ("gs://", False),
                                       ("gs:///p", False), (" ", False)])
def test_well_formed_locations(value, ok):
    assert storage.well_formed(value) is ok
