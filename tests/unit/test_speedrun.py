"""The speedrun recipe: it selects its own network, whitens with a frozen first convolution set from the data,
mirrors images on alternate epochs (keyed like the rest of the stream), learns biases faster, and runs and learns
on a slice, under one device and under MirroredStrategy, its SavedModel scoring as the evaluation did."""

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from support.data import splits, train_in_process
from trainer.config import run_config, recipes
from trainer.training import data, models, optimization


@pytest.fixture
def parsed(trainer_command_line):
    """The run's config from a command line of the trainer's flags."""
    def parse(*args):
        trainer_command_line(*args)
        return run_config.from_flags(flags.FLAGS, environ={})
    return parse


def test_the_speedrun_recipe_alone_trains_its_own_network_and_model_still_chooses(parsed):
    assert parsed("--recipe=speedrun", "--output_dir=out").job.model == "speedrun"
    assert parsed("--recipe=speedrun", "--model=cnn", "--output_dir=out").job.model == "cnn"
    assert parsed("--output_dir=out").job.model == "cnn"  # the flag's default, for every other recipe
    assert parsed("--recipe=strong", "--output_dir=out").job.model == "cnn"
    cfg = run_config.make(output_dir="out", recipe="speedrun")
    assert cfg.job.model == "speedrun" and cfg.flags["model"] == "speedrun"  # metrics.json names what trained
    assert run_config.make(output_dir="out").flags["model"] == "cnn"


def test_patch_whitening_decorrelates_the_training_patches(fashion):
    images = fashion[0][0][:2000]
    kernel, bias = models.patch_whitening(images)
    assert kernel.shape == (3, 3, 1, 18) and bias.shape == (18,)
    np.testing.assert_allclose(kernel[..., 9:], -kernel[..., :9])  # each direction with both signs
    whitened = tf.nn.conv2d(images.astype(np.float32) / 255.0, kernel, 1, "VALID").numpy() + bias
    components = whitened[..., :9].reshape(-1, 9)
    np.testing.assert_allclose(components.mean(axis=0), 0.0, atol=1e-3)
    covariance = np.cov(components, rowvar=False)
    # Unit variance but for the epsilon's damping of the weakest directions; no correlation between any two.
    assert np.all(np.abs(covariance - np.diag(np.diag(covariance))) < 1e-3)
    assert np.all(np.diag(covariance)[-5:] > 0.9)


def test_the_speedrun_network_starts_with_its_frozen_whitening():
    model = models.get("speedrun").build()
    whitening = model.get_layer("whitening")
    assert not whitening.trainable and whitening.kernel not in model.trainable_weights
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert norms and all(not norm.scale for norm in norms)  # batch norm learns its shift only


def stream(images, labels, seed, start_step=0, steps=8):
    augmentation = recipes.Augmentation(alternating_flip=True)
    ds = data.train_dataset(images, labels, 32, (28, 28, 1), seed, augmentation, start_step=start_step)
    return [x.numpy() for x, _ in ds.take(steps)]


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs(fashion):
    images, labels = fashion[0][0][:128], fashion[0][1][:128]
    unique = np.arange(128, dtype=np.int64)  # labels as indices, to find each image again in a batch
    batches = data.train_dataset(images, unique, 128, (28, 28, 1), seed=3,
                                 augmentation=recipes.Augmentation(alternating_flip=True)).take(3)
    epochs = []
    for x, index in batches:
        order = np.argsort(index.numpy())
        original = images[index.numpy()].astype(np.float32) / 255.0
        mirrored = np.all(np.isclose(x.numpy(), original[:, :, ::-1]), axis=(1, 2, 3))
        plain = np.all(np.isclose(x.numpy(), original), axis=(1, 2, 3))
        symmetric = mirrored & plain
        epochs.append((mirrored[order], plain[order], symmetric[order]))
    (m0, p0, s0), (m1, p1, _), (m2, _, _) = epochs
    assert np.all(m0 | p0) and np.all(m1 | p1)
    asymmetric = ~s0
    assert 0.3 < m0[asymmetric].mean() < 0.7  # a random half first
    np.testing.assert_array_equal(m1[asymmetric], ~m0[asymmetric])  # then the other way round
    np.testing.assert_array_equal(m2[asymmetric], m0[asymmetric])


def test_the_alternating_flip_stream_resumes_bit_exact(fashion):
    images, labels = fashion[0][0][:200], fashion[0][1][:200]
    whole = stream(images, labels, seed=5, steps=20)
    resumed = stream(images, labels, seed=5, start_step=9, steps=11)
    for a, b in zip(whole[9:], resumed):
        np.testing.assert_array_equal(a, b)


def test_biases_learn_bias_learning_rate_factor_times_faster():
    def one_step(factor):
        kernel = tf.Variable(tf.ones([2, 2]), name="kernel")
        bias = tf.Variable(tf.ones([2]), name="bias")
        sgd = optimization.NesterovSGD(learning_rate=0.1, momentum=0.9, nesterov=True,
                                       bias_learning_rate_factor=factor)
        sgd.apply_gradients([(tf.ones([2, 2]), kernel), (tf.ones([2]), bias)])
        return 1 - kernel.numpy()[0, 0], 1 - bias.numpy()[0]
    kernel_step, bias_step = one_step(1.0)
    fast_kernel_step, fast_bias_step = one_step(8.0)
    assert fast_kernel_step == pytest.approx(kernel_step)
    assert fast_bias_step == pytest.approx(8 * bias_step)


def test_speedrun_recipe_learns_on_a_slice_and_exports_what_it_evaluated(fashion, tmp_path):
    # Two of the recipe's 18 test-time views (flip_grid's tracing and export take most of this test's time): what is
    # asserted is that the SavedModel serves what the evaluation scored, whatever the views.
    assert recipes.get("speedrun", "speedrun").test_time_augmentation == "flip_grid"
    m = train_in_process(tmp_path, splits(fashion, 3000, test_examples=500), recipe="speedrun", epochs=2,
                         test_time_augmentation="flip")
    assert m["model"] == "speedrun" and m["recipe"] == "speedrun"
    assert m["recipe_settings"]["augmentation"]["alternating_flip"]
    assert m["test_accuracy"] > 0.6  # chance is 0.1
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    images = fashion[1][0][:500]
    predicted = loaded.signatures["serving_default"](images=tf.constant(images))["class_id"].numpy()
    np.testing.assert_array_equal(predicted, np.load(tmp_path / "test_predictions.npz")["class_id"])


@pytest.mark.usefixtures("placeholder_saved_model")  # reads no SavedModel
def test_speedrun_recipe_trains_under_mirrored_strategy(fashion, tmp_path):
    # Two replicas summed on one device, without collective ops: TensorFlow keys a collective instance by the
    # devices and a counter, so a second MirroredStrategy in this process (test_train's) reusing a key with the
    # other model's gradient shape aborts ("Shape mismatch in the collective instance 100").
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    # One test-time view: the 18 views and their export are the slice test's (above); this one is about training.
    m = train_in_process(tmp_path, splits(fashion, 3000, test_examples=500), recipe="speedrun", epochs=2,
                         strategy=strategy, test_time_augmentation="none")
    assert m["num_replicas"] == 2 and m["model"] == "speedrun"
    assert m["test_accuracy"] > 0.5  # chance is 0.1
