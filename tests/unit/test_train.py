"""Training in-process on real data (few examples, one or two epochs): outputs, metrics, SavedModel, strategies,
recipes, validation and early stopping."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from support.data import splits, train_in_process
from support.processes import read_metrics
from trainer.training import distribution
from trainer.config import recipes

SEED_RECIPE = dict(recipe="seed", epochs=1)


@pytest.fixture(scope="module")
def cnn_run(fashion, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    train_in_process(out, splits(fashion, 2000), model="cnn", **SEED_RECIPE)
    return out


def test_a_run_publishes_saved_model_metrics_logs_and_predictions(cnn_run):
    names = sorted(os.listdir(cnn_run))
    assert names == ["logs", "metrics.json", "saved_model", "test_predictions.npz"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(cnn_run / "logs" / "train"))
    assert not (cnn_run / "checkpoints").exists()  # the preemption backup is removed after success


def test_metrics_json_describes_the_run(cnn_run):
    m = read_metrics(cnn_run)
    assert m["model"] == "cnn" and m["params"] == 93_322
    assert m["epochs"] == 1 and m["batch_size"] == 32 and m["recipe"] == "seed"
    assert m["strategy"] == "default" and m["num_replicas"] == 1 and m["seed"] == 42
    assert 0.6 < m["test_accuracy"] <= 1.0  # far above chance (0.1) after one short epoch
    assert m["test_loss"] > 0
    assert list(m["per_class_accuracy"]) == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                             "Shirt", "Sneaker", "Bag", "Ankle boot"]
    confusion = np.array(m["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    assert np.isclose(np.trace(confusion) / 10_000, m["test_accuracy"])
    assert m["train_seconds"] > 0 and m["examples_per_second"] > 0
    assert m["train_examples"] == 2000 and len(m["history"]) == 1
    assert set(m["versions"]) == {"python", "tensorflow", "tf_keras", "tensorflow_datasets"}
    assert m["versions"]["tensorflow"].startswith("2.21")
    assert m["flags"]["epochs"] == 1 and m["flags"]["batch_size"] is None  # as given: the recipe chose 32
    assert m["recipe_settings"]["batch_size"] == 32 and len(m["weights_sha256"]) == 64


def test_saved_model_reproduces_test_accuracy_from_raw_uint8_images(cnn_run, fashion):
    images, labels = fashion[1]
    assert images.dtype == np.uint8
    serve = tf.saved_model.load(str(cnn_run / "saved_model")).signatures["serving_default"]
    out = serve(images=tf.constant(images[..., 0]))  # [N, 28, 28], as the data set stores them
    assert out["probabilities"].shape == (10_000, 10)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(out["class_id"].numpy() == labels))
    assert accuracy == pytest.approx(read_metrics(cnn_run)["test_accuracy"], abs=2e-4)
    with_channel = serve(images=tf.constant(images[:64]))  # [N, 28, 28, 1] gives the same answer
    np.testing.assert_array_equal(with_channel["class_id"].numpy(), out["class_id"].numpy()[:64])
    class_names = list(read_metrics(cnn_run)["per_class_accuracy"])
    assert [n.decode() for n in out["class_name"].numpy()[:20]] == [class_names[i] for i in out["class_id"][:20]]
    kept = np.load(cnn_run / "test_predictions.npz")
    np.testing.assert_array_equal(kept["label"], labels)
    assert np.mean(kept["class_id"] == out["class_id"].numpy()) > 0.999


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_overwrite_replaces_a_finished_run(cnn_run, fashion, tmp_path):
    for name in os.listdir(cnn_run):
        (shutil.copytree if (cnn_run / name).is_dir() else shutil.copy)(cnn_run / name, tmp_path / name)
    train_in_process(tmp_path, splits(fashion, 1000), model="mlp", overwrite=True, **SEED_RECIPE)
    assert read_metrics(tmp_path)["model"] == "mlp"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left behind


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_mirrored_over_two_cpu_devices_trains_like_one_device(fashion, tmp_path):
    data = splits(fashion, 2000, test_examples=1000)
    common = dict(model="mlp", recipe="seed", epochs=2, batch_size=64)
    one = train_in_process(tmp_path / "one", data, strategy=distribution.get_strategy("one_device"), **common)
    two = train_in_process(tmp_path / "two", data, strategy=distribution.get_strategy("mirrored"), **common)
    assert (one["strategy"], one["num_replicas"]) == ("one_device", 1)
    assert (two["strategy"], two["num_replicas"]) == ("mirrored", 2)
    # Two replicas of a batch of 64 make the same update as one device's 64: the runs barely differ.
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.01)
    for a, b in zip(one["history"], two["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02)


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_fast_recipe_trains_far_above_chance_on_a_short_budget(fashion, tmp_path):
    # The recipe's own epochs, schedule and settings, on 5,000 examples: the CI check of `--recipe=fast`.
    m = train_in_process(tmp_path, splits(fashion, 5000, test_examples=2000), model="mlp", recipe="fast")
    assert m["recipe"] == "fast" and m["recipe_settings"]["schedule"] == "linear_decay"
    assert m["epochs"] == 5 and len(m["history"]) == 5 and m["batch_size"] == 128
    assert m["test_accuracy"] > 0.75  # chance is 0.1
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_any_recipe_setting_is_overridden_and_recorded(fashion, tmp_path):
    m = train_in_process(tmp_path, splits(fashion, 500, test_examples=500), model="mlp", recipe="fast", epochs=1,
                         label_smoothing=0.0, schedule="constant", max_shift=1)
    settings = m["recipe_settings"]
    assert (settings["label_smoothing"], settings["schedule"], settings["augmentation"]["max_shift"]) == \
        (0.0, "constant", 1)
    assert settings["steps_per_execution"] == recipes.get("fast", "mlp").steps_per_execution  # the rest: fast's
    assert m["flags"]["max_shift"] == 1


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_validation_split_holds_out_the_last_training_examples(fashion, tmp_path):
    m = train_in_process(tmp_path, splits(fashion, 1000, validation_split=0.2), model="mlp", recipe="seed",
                         epochs=2, validation_split=0.2)
    assert (m["train_examples"], m["validation_examples"]) == (800, 200)
    assert all(0 <= row["val_accuracy"] <= 1 and row["val_loss"] > 0 for row in m["history"])
    assert m["validation_accuracy"] == m["history"][-1]["val_accuracy"]
    assert m["test_examples"] == 10_000  # the test split is evaluated once, whole


def test_strong_recipe_exports_a_model_that_averages_its_test_time_views(fashion, tmp_path):
    m = train_in_process(tmp_path, splits(fashion, 512, test_examples=1000), model="vgg", recipe="strong",
                         epochs=1)
    assert m["recipe_settings"]["test_time_augmentation"] == "flip_shift"
    assert m["recipe_settings"]["augmentation"]["erasing_probability"] > 0
    images = fashion[1][0][:1000]
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    probabilities = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
    kept = np.load(tmp_path / "test_predictions.npz")["class_id"]
    np.testing.assert_array_equal(probabilities.argmax(axis=1), kept)  # the export evaluates as training did
    # ... which is the mean over six views of each image: itself, its mirror image and four one-pixel shifts.
    scaled = images[:200].astype(np.float32) / 255.0
    padded = np.pad(scaled, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [scaled, scaled[:, :, ::-1]] + [padded[:, 1 - dy:29 - dy, 1 - dx:29 - dx]
                                            for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]]
    by_hand = np.mean([loaded.model(tf.constant(v)).numpy() for v in views], axis=0)
    np.testing.assert_allclose(probabilities[:200], by_hand, atol=1e-6)
    # The views do differ (the barely trained model's answers are near uniform, so the differences are small).
    assert np.abs(by_hand - loaded.model(tf.constant(scaled)).numpy()).max() > 2e-5


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_early_stopping_ends_a_run_that_stops_improving_and_keeps_the_best_epoch(fashion, tmp_path):
    # A learning rate far too high: validation accuracy soon stops improving, so patience 1 ends the run early.
    m = train_in_process(tmp_path, splits(fashion, 1000, validation_split=0.2, test_examples=1000), model="mlp",
                         recipe="seed", epochs=8, learning_rate=5, early_stopping_patience=1, validation_split=0.2)
    assert m["epochs"] == 8 and m["epochs_completed"] < 8
    assert m["validation_accuracy"] == max(row["val_accuracy"] for row in m["history"])


def test_vertex_ai_environment_sets_the_output_locations(fashion, tmp_path):
    vertex = {"AIP_MODEL_DIR": str(tmp_path / "model"), "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
              "AIP_TENSORBOARD_LOG_DIR": str(tmp_path / "tensorboard")}
    from trainer.config import run_config
    from trainer.training import train
    cfg = run_config.make(environ=vertex, model="mlp", recipe="seed", epochs=1)
    assert (cfg.job.output_dir, cfg.job.checkpoint_dir) == (vertex["AIP_MODEL_DIR"], vertex["AIP_CHECKPOINT_DIR"])
    train.run(cfg, splits=splits(fashion, 500, test_examples=500))
    assert read_metrics(tmp_path / "model")["model"] == "mlp"
    assert (tmp_path / "model" / "saved_model" / "saved_model.pb").exists()
    assert any(f.startswith("events.out") for f in os.listdir(tmp_path / "tensorboard" / "train"))
    assert not (tmp_path / "model" / "logs").exists() and not (tmp_path / "checkpoints").exists()
    # A flag beats the environment.
    flagged = run_config.make(environ=vertex, output_dir=str(tmp_path / "flagged"), model="mlp")
    assert flagged.job.output_dir == str(tmp_path / "flagged")
    assert flagged.job.checkpoint_dir == vertex["AIP_CHECKPOINT_DIR"]
