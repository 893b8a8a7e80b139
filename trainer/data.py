"""Input pipeline: Fashion-MNIST from TFDS as tf.data, ready for any tf.distribute strategy.

Images stay uint8 in the cache (47 MB for the training split) and are scaled to float32 in [0, 1] after batching,
one vectorised op per batch instead of one per image. The pipeline is batched with the *global* batch size; Keras
splits each batch across replicas.

Sharding: TFDS stores each Fashion-MNIST split as one file, so tf.data's default FILE auto-sharding cannot give
several workers disjoint data. The DATA policy makes every worker read the stream and keep its own share; since
every worker shuffles with the same seed, the shares are disjoint and together cover the epoch.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

DATASET = "fashion_mnist"
TRAIN_SIZE = 60000
TEST_SIZE = 10000
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def prepare(data_dir=None, manual_dir=None):
    """Returns the TFDS builder with the data set prepared in `data_dir`.

    With `manual_dir` (a folder of the four official .gz files) TFDS verifies their checksums and prepares the
    data set without a network; without it TFDS downloads the same files. Preparing is a no-op once done.
    """
    builder = tfds.builder(DATASET, data_dir=data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def pipeline_options():
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return options


def scale(images, input_shape):
    """uint8 images of any layout -> float32 in [0, 1], shaped `[batch, *input_shape]`."""
    images = tf.cast(images, tf.float32) / 255.0
    return tf.reshape(images, [-1, *input_shape])


def train_dataset(builder, batch_size, input_shape, seed, train_examples=None):
    """The training stream: cached, shuffled anew each epoch (reproducibly, from `seed`), batched, prefetched."""
    split = f"train[:{train_examples}]" if train_examples else "train"
    size = train_examples or TRAIN_SIZE
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    ds = ds.cache().shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return _batched(ds, batch_size, input_shape)


def test_dataset(builder, batch_size, input_shape):
    """The test split in its stored order, batched; used once, after training."""
    ds = builder.as_dataset(split="test", as_supervised=True, shuffle_files=False)
    return _batched(ds, batch_size, input_shape)


def _batched(ds, batch_size, input_shape):
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (scale(x, input_shape), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def raw_test_arrays(builder):
    """The test split as NumPy arrays exactly as stored: uint8 images [N, 28, 28, 1] and int64 labels."""
    images, labels = tfds.as_numpy(builder.as_dataset(split="test", as_supervised=True, batch_size=-1))
    return images, labels
