"""Outputs to gs:// through google-cloud-storage, against a local Cloud Storage emulator on loopback."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_ok, data_flags, free_ports, run_trainer


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """gcp-storage-emulator on 127.0.0.1 with a bucket `runs`; yields the env that points clients at it."""
    port = free_ports(1)[0]
    log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "w")
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator"), "start",
                                "--host=127.0.0.1", f"--port={port}", "--in-memory", "--default-bucket=runs"],
                               stdout=log, stderr=subprocess.STDOUT)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
        from google.cloud import storage
        deadline = time.time() + 30
        while True:
            try:
                if storage.Client().bucket("runs").exists():
                    break
            except Exception:  # not listening yet
                pass
            assert time.time() < deadline and process.poll() is None, "the storage emulator did not start"
            time.sleep(0.2)
    yield env
    process.terminate()
    process.wait(timeout=10)


def test_outputs_land_in_cloud_storage_and_the_model_loads_back(prepared_data, emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator["STORAGE_EMULATOR_HOST"])
    result = run_trainer("--model=mlp", "--recipe=seed", "--train_examples=2000", "--epochs=1",
                         "--output_dir=gs://runs/fmnist/mlp", f"--checkpoint_dir={tmp_path / 'ckpt'}",
                         *data_flags(), env=emulator)
    assert_ok(result)
    from google.cloud import storage
    names = {blob.name for blob in storage.Client().list_blobs("runs", prefix="fmnist/mlp/")}
    for expected in ("metrics.json", "saved_model/saved_model.pb", "saved_model/variables/variables.index",
                     "test_predictions.npz"):
        assert f"fmnist/mlp/{expected}" in names
    assert any(name.startswith("fmnist/mlp/logs/train/events.out") for name in names)

    from trainer import outputs
    local = outputs.download("gs://runs/fmnist/mlp", str(tmp_path / "downloaded"))
    import tensorflow as tf
    import tensorflow_datasets as tfds
    images, labels = tfds.as_numpy(tfds.load("fashion_mnist", split="test[:500]", as_supervised=True,
                                             batch_size=-1, data_dir=prepared_data, download=False))
    serve = tf.saved_model.load(os.path.join(local, "saved_model")).signatures["serving_default"]
    predicted = serve(images=tf.constant(images))["class_id"].numpy()
    kept = np.load(os.path.join(local, "test_predictions.npz"))
    np.testing.assert_array_equal(predicted, kept["class_id"][:500])
    assert np.mean(predicted == labels) > 0.5
    assert outputs.open_output("gs://runs/fmnist/mlp").read_metrics()["model"] == "mlp"


def test_missing_bucket_is_reported_before_training(prepared_data, emulator):
    result = run_trainer("--model=mlp", "--output_dir=gs://no-such-bucket/run", *data_flags(), env=emulator)
    assert result.returncode == 2
    assert "bucket gs://no-such-bucket does not exist" in result.stderr
    assert "Epoch 1/" not in result.stderr and "Traceback" not in result.stderr


def test_missing_credentials_are_reported_before_training(prepared_data, tmp_path):
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "no-key.json"), "HOME": str(tmp_path)}
    result = run_trainer("--model=mlp", "--output_dir=gs://some-bucket/run", *data_flags(), env=env)
    assert result.returncode == 2
    assert "no Google Cloud credentials" in result.stderr
    assert "Epoch 1/" not in result.stderr and "Traceback" not in result.stderr
