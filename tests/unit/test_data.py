"""The input pipeline: decoding, shapes, dtypes, scaling, batching, seeded shuffling, augmentation, sharding."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import trainer  # noqa: F401
from trainer.training import data
from trainer.config import recipes


@pytest.fixture(scope="module")
def mock_arrays():
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        builder = tfds.builder("fashion_mnist")
        return data.load(builder, "train")


def test_load_decodes_a_split_into_uint8_images_and_int_labels(mock_arrays):
    images, labels = mock_arrays
    assert images.shape == (64, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (64,) and labels.dtype == np.int64
    assert images.max() > 127  # real pixel values, not zeros


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (28, 28)])
def test_train_batches_are_scaled_float_images_with_int_labels(mock_arrays, input_shape):
    ds = data.train_dataset(*mock_arrays, batch_size=16, input_shape=input_shape, seed=1)
    images, labels = next(iter(ds))
    assert images.shape == (16, *input_shape)
    assert images.dtype == tf.float32
    assert labels.dtype == tf.int64 and labels.shape == (16,)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert float(tf.reduce_max(images)) > 0.5  # really scaled from 0..255, not left near zero or clipped


def test_scale_maps_uint8_range_onto_unit_interval():
    raw = tf.constant([[0, 51, 255]], dtype=tf.uint8)
    np.testing.assert_allclose(data.scale(raw, (3,)).numpy(), [[0.0, 0.2, 1.0]], atol=1e-6)


def test_batches_cover_the_split_once_per_epoch_with_labels_matching_images(mock_arrays):
    images, labels = mock_arrays
    ds = data.train_dataset(images, labels, batch_size=10, input_shape=(28, 28, 1), seed=1)
    two_epochs = list(ds.take(14))  # the stream repeats: 7 batches an epoch, none spanning two epochs
    assert [int(y.shape[0]) for _, y in two_epochs] == ([10] * 6 + [4]) * 2
    batches = two_epochs[:7]
    seen_images = np.concatenate([np.round(x.numpy() * 255).astype(np.uint8) for x, _ in batches])
    seen_labels = np.concatenate([y.numpy() for _, y in batches])
    by_image = {img.tobytes(): label for img, label in zip(images, labels)}
    assert len(by_image) == 64  # the mock images are distinct, so each identifies its example
    assert sorted(img.tobytes() for img in seen_images) == sorted(by_image)
    assert all(by_image[img.tobytes()] == label for img, label in zip(seen_images, seen_labels))


def epochs_pixels(ds, epochs=2, steps_per_epoch=1):
    """The pixels of each of the first epochs of an endless training stream."""
    batches = iter(ds)
    return [np.concatenate([next(batches)[0].numpy().reshape(-1) for _ in range(steps_per_epoch)])
            for _ in range(epochs)]


def test_shuffle_is_reproducible_from_the_seed_and_differs_per_epoch(mock_arrays):
    epoch1, epoch2 = epochs_pixels(data.train_dataset(*mock_arrays, batch_size=64, input_shape=(28, 28, 1), seed=7))
    again1, again2 = epochs_pixels(data.train_dataset(*mock_arrays, batch_size=64, input_shape=(28, 28, 1), seed=7))
    np.testing.assert_array_equal(epoch1, again1)
    np.testing.assert_array_equal(epoch2, again2)
    assert not np.array_equal(epoch1, epoch2)
    assert np.isclose(np.sort(epoch1).sum(), np.sort(epoch2).sum())  # same examples, other order
    other_seed, _ = epochs_pixels(data.train_dataset(*mock_arrays, batch_size=64, input_shape=(28, 28, 1), seed=8))
    assert not np.array_equal(epoch1, other_seed)


def test_pipeline_shards_by_data_for_many_workers(mock_arrays):
    for ds in (data.train_dataset(*mock_arrays, batch_size=8, input_shape=(28, 28, 1), seed=1),
               data.eval_dataset(*mock_arrays, batch_size=8, input_shape=(28, 28, 1))):
        policy = ds.options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_pipeline_runs_without_the_autotuner(mock_arrays):
    # Its background thread held up the iterator's destruction, and so the end of `fit`, for up to a minute.
    for ds in (data.train_dataset(*mock_arrays, batch_size=8, input_shape=(28, 28, 1), seed=1),
               data.eval_dataset(*mock_arrays, batch_size=8, input_shape=(28, 28, 1))):
        assert ds.options().autotune.enabled is False


def test_eval_split_is_batched_in_stored_order(mock_arrays):
    images, labels = mock_arrays
    ds = data.eval_dataset(images, labels, batch_size=30, input_shape=(28, 28))
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in ds]), labels)
    first = next(iter(ds))[0].numpy()
    np.testing.assert_allclose(first, images[:30, ..., 0] / 255.0, atol=1e-6)


# ---- augmentation -------------------------------------------------------------------------------------------

def one_bright_pixel(count, row=10, col=5):
    images = np.zeros((count, 28, 28, 1), np.float32)
    images[:, row, col, 0] = 1.0
    return tf.constant(images)


def test_shift_moves_each_image_by_at_most_max_shift_pixels_and_differently():
    images = one_bright_pixel(256)
    out = data.augment(images, tf.constant([3, 4]), recipes.Augmentation(max_shift=2)).numpy()
    positions = [np.argwhere(img[..., 0] == 1.0) for img in out]
    assert all(len(p) == 1 for p in positions)  # nothing lost, nothing blurred (nearest pixel)
    moves = np.array([p[0] - [10, 5] for p in positions])
    assert np.abs(moves).max() == 2
    assert len({tuple(m) for m in moves}) == 25  # every shift in [-2, 2]^2 occurs


def test_flip_mirrors_about_half_the_images_exactly():
    images = one_bright_pixel(400)
    out = data.augment(images, tf.constant([1, 2]), recipes.Augmentation(horizontal_flip=True)).numpy()
    mirrored = out[:, 10, 28 - 1 - 5, 0] == 1.0
    unchanged = out[:, 10, 5, 0] == 1.0
    assert np.all(mirrored ^ unchanged)
    assert 150 < mirrored.sum() < 250


def test_random_erasing_overwrites_one_rectangle_in_about_the_given_share_of_images():
    images = tf.fill([400, 28, 28, 1], 2.0)  # a value noise in [0, 1) never takes
    out = data.augment(images, tf.constant([5, 6]), recipes.Augmentation(erasing_probability=0.5)).numpy()
    erased = out[..., 0] != 2.0
    hit = erased.any(axis=(1, 2))
    assert 150 < hit.sum() < 250
    for mask in erased[hit][:50]:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a filled rectangle
        assert 0.02 * 784 * 0.5 <= mask.sum() <= 0.4 * 784 * 1.2


def test_augmented_stream_is_reproducible_from_the_seed_and_differs_per_epoch(mock_arrays):
    strong = recipes.get("strong", "vgg").augmentation

    def make(seed):
        return data.train_dataset(*mock_arrays, batch_size=32, input_shape=(28, 28, 1), seed=seed,
                                  augmentation=strong)
    epoch1, epoch2 = epochs_pixels(make(3), steps_per_epoch=2)
    np.testing.assert_array_equal(epoch1, epochs_pixels(make(3), steps_per_epoch=2)[0])
    assert not np.array_equal(epoch1, epoch2)
    plain, _ = epochs_pixels(data.train_dataset(*mock_arrays, batch_size=32, input_shape=(28, 28, 1), seed=3),
                             steps_per_epoch=2)
    assert not np.array_equal(epoch1, plain)


def test_hold_out_keeps_the_first_examples_and_holds_out_the_last():
    images, labels = np.arange(10 * 4).reshape(10, 2, 2), np.arange(10)
    (kept_images, kept_labels), (held_images, held_labels) = data.hold_out(images, labels, 3)
    assert kept_labels.tolist() == list(range(7)) and held_labels.tolist() == [7, 8, 9]
    np.testing.assert_array_equal(np.concatenate([kept_images, held_images]), images)


def test_load_splits_holds_out_the_end_of_the_first_training_examples(monkeypatch):
    def fake_load(builder, split):  # split "train[:N]" -> N examples whose labels are their indices
        count = int(split[len("train[:"):-1]) if split.startswith("train[:") else 60000 if split == "train" else 7
        return np.zeros((count, 28, 28, 1), np.uint8), np.arange(count)
    monkeypatch.setattr(data, "load", fake_load)
    loaded = data.load_splits(None, train_examples=40, validation_split=0.25)
    np.testing.assert_array_equal(loaded.train[1], np.arange(30))
    np.testing.assert_array_equal(loaded.validation[1], np.arange(30, 40))
    assert len(loaded.test[1]) == 7
    everything = data.load_splits(None, train_examples=None, validation_split=0)
    assert everything.validation is None and len(everything.train[1]) == 60000


@pytest.mark.parametrize("examples, batch, steps", [(60000, 32, 1875), (1000, 128, 8), (128, 128, 1), (1, 64, 1)])
def test_an_epoch_is_every_example_once_the_last_batch_short(examples, batch, steps):
    assert data.steps_per_epoch(examples, batch) == steps


@pytest.mark.parametrize("augmented", [False, True], ids=["plain", "augmented"])
def test_a_stream_started_at_step_k_is_the_full_streams_batches_from_k_on(mock_arrays, augmented):
    """What a resumed run relies on: every batch (order and augmentation draws) depends on the seed and its global
    step alone, across epoch boundaries too."""
    augmentation = recipes.get("strong", "vgg").augmentation if augmented else None

    def batches(start_step, count):
        stream = iter(data.train_dataset(*mock_arrays, batch_size=32, input_shape=(28, 28, 1), seed=5,
                                         augmentation=augmentation, start_step=start_step))
        return [tuple(part.numpy() for part in next(stream)) for _ in range(count)]
    steps = data.steps_per_epoch(len(mock_arrays[1]), 32)
    full = batches(0, 3 * steps)
    for start in (1, steps - 1, steps, 2 * steps + 1):
        for (images, labels), (expected_images, expected_labels) in zip(batches(start, 3), full[start:start + 3]):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)
