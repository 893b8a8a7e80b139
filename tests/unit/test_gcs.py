"""Outputs to gs:// through google-cloud-storage, against a Cloud Storage emulator on loopback."""

import numpy as np
import pytest
import tensorflow as tf

from support.data import splits, train_in_process
from trainer.storage import outputs
from trainer.errors import UserError


def test_outputs_land_in_cloud_storage_and_the_model_loads_back(fashion, gcs, tmp_path):
    train_in_process("gs://runs/fmnist/mlp", splits(fashion, 2000), model="mlp", recipe="seed", epochs=1,
                     checkpoint_dir=str(tmp_path / "ckpt"))
    names = {blob.name for blob in gcs.client.list_blobs("runs", prefix="fmnist/mlp/")}
    for expected in ("metrics.json", "saved_model/saved_model.pb", "saved_model/variables/variables.index",
                     "test_predictions.npz"):
        assert f"fmnist/mlp/{expected}" in names
    assert any(name.startswith("fmnist/mlp/logs/train/events.out") for name in names)

    local = outputs.fetch("gs://runs/fmnist/mlp", ["test_predictions.npz"], str(tmp_path))
    for blob in gcs.client.list_blobs("runs", prefix="fmnist/mlp/saved_model/"):
        target = tmp_path / "model" / blob.name[len("fmnist/mlp/saved_model/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
    images, labels = fashion[1][0][:500], fashion[1][1][:500]
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    predicted = serve(images=tf.constant(images))["class_id"].numpy()
    kept = np.load(f"{local}/test_predictions.npz")
    np.testing.assert_array_equal(predicted, kept["class_id"][:500])
    assert np.mean(predicted == labels) > 0.5
    assert outputs.read_metrics("gs://runs/fmnist/mlp")["model"] == "mlp"


def test_missing_bucket_is_reported_before_training(gcs):
    with pytest.raises(UserError, match="bucket gs://no-such-bucket does not exist"):
        train_in_process("gs://no-such-bucket/run", None, model="mlp")


def test_missing_credentials_are_reported_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="no Google Cloud credentials"):
        train_in_process("gs://some-bucket/run", None, model="mlp")
