"""Publishing: metrics.json goes last, so that a crash never leaves a result that looks finished."""

import json
import os

import pytest

from trainer.storage import outputs
from trainer import storage


def staged(tmp_path):
    staging = tmp_path / "staging"
    (staging / "saved_model" / "variables").mkdir(parents=True)
    (staging / "saved_model" / "saved_model.pb").write_text("graph")
    (staging / "saved_model" / "variables" / "variables.index").write_text("index")
    (staging / "test_predictions.npz").write_text("predictions")
    return staging


def test_local_publish_moves_everything_then_writes_metrics(tmp_path):
    out = outputs.LocalOutput(tmp_path / "run")
    out.check_writable()
    (tmp_path / "run" / "saved_model").mkdir()
    (tmp_path / "run" / "saved_model" / "stale.pb").write_text("old")
    out.publish(str(staged(tmp_path)), {"test_accuracy": 0.9})
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.json", "saved_model", "test_predictions.npz"]
    assert not (tmp_path / "run" / "saved_model" / "stale.pb").exists()
    assert out.is_finished() and outputs.read_metrics(out.url) == {"test_accuracy": 0.9}
    assert not (tmp_path / "staging").exists()


def test_local_publish_that_fails_midway_leaves_no_metrics(tmp_path, monkeypatch):
    out = outputs.LocalOutput(tmp_path / "run")
    out.check_writable()
    real_replace = os.replace

    def crash_on_predictions(src, dst):
        if str(src).endswith("test_predictions.npz"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", crash_on_predictions)
    with pytest.raises(OSError):
        out.publish(str(staged(tmp_path)), {"test_accuracy": 0.9})
    assert not out.is_finished()


def test_unmark_finished_removes_only_the_marker(tmp_path):
    out = outputs.LocalOutput(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({}))
    (tmp_path / "saved_model").mkdir()
    out.unmark_finished()
    assert not out.is_finished() and (tmp_path / "saved_model").exists()


def test_stale_staging_of_a_crashed_run_is_cleared(tmp_path):
    out = outputs.LocalOutput(tmp_path)
    (tmp_path / ".staging-old").mkdir()
    staging = out.new_staging_dir()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".staging-")] == [os.path.basename(staging)]


class RecordingBucket:
    def __init__(self):
        self.uploads = []

    def blob(self, name):
        bucket = self

        class Blob:
            def upload_from_filename(self, filename):
                bucket.uploads.append(name)

            def upload_from_string(self, data, content_type=None):
                bucket.uploads.append(name)
        return Blob()


def test_gcs_publish_uploads_metrics_last_under_the_prefix(tmp_path):
    out = outputs.GcsOutput("gs://bucket/runs/cnn/")
    out._bucket = RecordingBucket()
    out.publish(str(staged(tmp_path)), {"test_accuracy": 0.9})
    assert out._bucket.uploads[-1] == "runs/cnn/metrics.json"
    assert sorted(out._bucket.uploads[:-1]) == ["runs/cnn/saved_model/saved_model.pb",
                                                "runs/cnn/saved_model/variables/variables.index",
                                                "runs/cnn/test_predictions.npz"]


@pytest.mark.parametrize("url, bucket, name, prefix", [
    ("gs://b/a/c", "b", "a/c", "a/c"), ("gs://b", "b", "", ""), ("gs://b/", "b", "", ""),
    ("gs://b/a/", "b", "a/", "a")])
def test_split_gcs(url, bucket, name, prefix):
    """The name as given (a trailing "/" says "a folder", which fmnist-predict's --input reads); a run's output
    prefix without it."""
    assert storage.split_gcs(url) == (bucket, name)
    assert outputs.GcsOutput(url).prefix == prefix
