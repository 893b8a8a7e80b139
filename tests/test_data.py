"""The input pipeline: shapes, dtypes, scaling, batching, seeded shuffling and multi-worker sharding options."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import trainer  # noqa: F401
from trainer import data


@pytest.fixture
def mock_builder():
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        yield tfds.builder("fashion_mnist")


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (28, 28)])
def test_train_batches_are_scaled_float_images_with_int_labels(mock_builder, input_shape):
    ds = data.train_dataset(mock_builder, batch_size=16, input_shape=input_shape, seed=1)
    images, labels = next(iter(ds))
    assert images.shape == (16, *input_shape)
    assert images.dtype == tf.float32
    assert labels.dtype == tf.int64 and labels.shape == (16,)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert float(tf.reduce_max(images)) > 0.5  # really scaled from 0..255, not left near zero or clipped


def test_scale_maps_uint8_range_onto_unit_interval():
    raw = tf.constant([[0, 51, 255]], dtype=tf.uint8)
    np.testing.assert_allclose(data.scale(raw, (3,)).numpy(), [[0.0, 0.2, 1.0]], atol=1e-6)


def test_batches_cover_the_split_once_per_epoch(mock_builder):
    ds = data.train_dataset(mock_builder, batch_size=10, input_shape=(28, 28, 1), seed=1)
    sizes = [int(labels.shape[0]) for _, labels in ds]
    assert sizes == [10] * 6 + [4]


def test_shuffle_is_reproducible_from_the_seed_and_differs_per_epoch(mock_builder):
    def first_epochs(seed):
        ds = data.train_dataset(mock_builder, batch_size=64, input_shape=(28, 28, 1), seed=seed)
        return [np.concatenate([images.numpy().reshape(-1) for images, _ in ds]) for _ in range(1)], ds

    (a,), ds_a = first_epochs(7)
    (b,), _ = first_epochs(7)
    np.testing.assert_array_equal(a, b)
    epoch1 = np.concatenate([x.numpy().reshape(-1) for x, _ in ds_a])
    epoch2 = np.concatenate([x.numpy().reshape(-1) for x, _ in ds_a])
    assert not np.array_equal(epoch1, epoch2)
    assert np.isclose(np.sort(epoch1).sum(), np.sort(epoch2).sum())  # same examples, other order


def test_pipeline_shards_by_data_for_many_workers(mock_builder):
    ds = data.train_dataset(mock_builder, batch_size=8, input_shape=(28, 28, 1), seed=1)
    policy = ds.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_test_split_is_batched_in_stored_order(mock_builder):
    ds = data.test_dataset(mock_builder, batch_size=1000, input_shape=(28, 28, 1))
    first = [labels.numpy() for _, labels in ds]
    second = [labels.numpy() for _, labels in ds]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
