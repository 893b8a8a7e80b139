"""Input pipeline: Fashion-MNIST from TFDS as tf.data, ready for any tf.distribute strategy.

Each split is decoded once, before training, into uint8 arrays in memory (TFDS stores PNGs; decoding them per epoch
costs more than an MLP's epoch). The training stream is a shuffled stream of *indices*, batched and then gathered
from those arrays: one vectorised op per batch. Images are scaled (and augmented, if the recipe says so) per batch.
The pipeline is batched with the *global* batch size; Keras splits each batch across replicas.

Sharding is by DATA: every worker reads the stream and keeps its own share (TFDS stores each split as one file, so
FILE sharding cannot split it); every worker shuffles with the same seed, so the shares are disjoint. Parallelism
is fixed and tf.data's autotuner is off: with it, the end of `fit` stalled while the iterator waited for the
autotuner's thread (docs/benchmarks.md, "end-of-fit stall").
"""

import dataclasses
import math
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.training.fashion_mnist import CLASS_NAMES, DATASET, IMAGE_SHAPE, NUM_CLASSES  # noqa: F401  (re-exported)

# Examples per batch when evaluating (validation, test): memory-bound, not a training setting.
EVAL_BATCH_SIZE = 1000


def prepare(data_dir=None, manual_dir=None):
    """Returns the TFDS builder with the data set prepared in `data_dir`.

    With `manual_dir` (a folder of the four official .gz files) TFDS verifies their checksums and prepares the
    data set without a network; without it TFDS downloads the same files. Preparing is a no-op once done.
    """
    builder = tfds.builder(DATASET, data_dir=data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def train_split(examples=None):
    """The TFDS split name of the first `examples` training examples (all of them when None or 0)."""
    return f"train[:{examples}]" if examples else "train"


def load(builder, split):
    """A split decoded into memory, in its stored order: uint8 images [N, 28, 28, 1] and int64 labels [N]."""
    batches = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(10000)))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@dataclasses.dataclass
class Splits:
    """The arrays a run trains and evaluates on: uint8 images [N, 28, 28, 1] and int labels [N]."""
    train: Tuple[np.ndarray, np.ndarray]
    test: Tuple[np.ndarray, np.ndarray]
    validation: Optional[Tuple[np.ndarray, np.ndarray]] = None


def load_splits(builder, train_examples=None, validation_split=0.0):
    """The training split (its first `train_examples`), its held-out end and the test split, decoded."""
    train = load(builder, train_split(train_examples))
    validation = None
    held_out = int(round(len(train[1]) * validation_split))
    if held_out:
        train, validation = hold_out(*train, held_out)
    return Splits(train=train, test=load(builder, "test"), validation=validation)


def steps_per_epoch(examples, batch_size):
    """Batches in one epoch; the last one may be short."""
    return math.ceil(examples / batch_size)


def hold_out(images, labels, count):
    """Splits off the last `count` examples: ((kept images, labels), (held-out images, labels)).

    The validation split is the end of the training split (never the test split), so a run and any later scoring
    of it (bench/score_validation.py) agree on which images were held out.
    """
    kept = len(labels) - count
    return (images[:kept], labels[:kept]), (images[kept:], labels[kept:])


PARALLEL_CALLS = os.cpu_count() or 2
PREFETCH_BATCHES = 4


def pipeline_options():
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    options.autotune.enabled = False  # see the module docstring
    return options


def scale(images, input_shape):
    """uint8 images of any layout -> float32 in [0, 1], shaped `[batch, *input_shape]`."""
    images = tf.cast(images, tf.float32) / 255.0
    return tf.reshape(images, [-1, *input_shape])


def train_dataset(images, labels, batch_size, input_shape, seed, augmentation=None, start_step=0):
    """The training stream from global step `start_step` on: shuffled anew each epoch, batched, augmented, prefetched.

    Every batch is a function of (`seed`, its global step) alone: epoch e's order is a stateless shuffle keyed by
    (seed, e), a batch's augmentation is keyed by (seed, step). So a run resumed from a backup at step k (the
    stream started at k) sees exactly the batches the uninterrupted run saw from step k on, and ends with the same
    weights. It repeats without end, one epoch after another (no batch spans two epochs), so one iterator serves
    the whole run and `fit` needs `steps_per_epoch`; Keras re-creates a finite dataset's iterator every epoch, and
    with the augmented pipeline that stalled some epoch boundaries for tens of seconds (docs/benchmarks.md).
    """
    count = len(labels)
    first_epoch, first_batch = divmod(start_step, steps_per_epoch(count, batch_size))
    images, labels = tf.constant(images), tf.constant(labels)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=[seed, epoch])
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    indices = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches).skip(first_batch)
    ds = tf.data.Dataset.zip((indices, tf.data.Dataset.counter(start_step)))
    ds = ds.map(lambda index, step: (scale(tf.gather(images, index), IMAGE_SHAPE), tf.gather(labels, index), step,
                                     index), num_parallel_calls=PARALLEL_CALLS)
    if augmentation is not None and augmentation.enabled:
        steps = steps_per_epoch(count, batch_size)
        # Alternating flip: image i is mirrored in epoch e when its coin (keyed by the seed alone) differs from
        # e's parity; so every image is seen both ways round in every two epochs, and the rule is a function of
        # (seed, step, index) like the rest of the stream.
        coins = tf.random.stateless_uniform([count], seed=[seed, -1]) < 0.5 if augmentation.alternating_flip else None

        def augment_batch(x, y, step, index):
            mirror = None
            if coins is not None:
                mirror = tf.not_equal(tf.gather(coins, index), tf.equal((step // steps) % 2, 1))
            return augment(x, tf.stack([tf.constant(seed, tf.int64), step]), augmentation, mirror), y, step, index
        ds = ds.map(augment_batch, num_parallel_calls=PARALLEL_CALLS)
    ds = ds.map(lambda x, y, step, index: (tf.reshape(x, [-1, *input_shape]), y))
    return ds.prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


def eval_dataset(images, labels, input_shape, batch_size=EVAL_BATCH_SIZE):
    """A split in its stored order, batched and scaled; for validation and the final test."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    ds = ds.map(lambda x, y: (scale(x, input_shape), y), num_parallel_calls=PARALLEL_CALLS)
    return ds.prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


def augment(images, seed_pair, augmentation, mirror=None):
    """Randomly shifted, mirrored and erased copies of float images [B, 28, 28, 1], each image its own draw.

    Shift and flip are one projective transform per image (nearest pixel, zero fill), so the whole batch is a
    single op; erasing builds each image's rectangle as a mask from coordinate grids. `mirror` (bool [B]), when
    given, says which images to mirror (alternating flip) instead of a random draw.
    """
    batch = tf.shape(images)[0]
    height, width = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed_pair, tf.int64), num=7)

    def uniform(i, minval=0.0, maxval=1.0, shape=None):
        return tf.random.stateless_uniform(shape if shape is not None else [batch], seeds[i], minval, maxval)

    if augmentation.max_shift or augmentation.horizontal_flip or mirror is not None:
        shift = float(augmentation.max_shift)
        dx = tf.round(uniform(0, -shift - 0.49, shift + 0.49)) if shift else tf.zeros([batch])
        dy = tf.round(uniform(1, -shift - 0.49, shift + 0.49)) if shift else tf.zeros([batch])
        if mirror is None:
            mirror = uniform(2) < 0.5 if augmentation.horizontal_flip else tf.zeros([batch], tf.bool)
        # Output pixel (x, y) reads input (a0 x + a2, y + b2): a0 = -1 mirrors, a2/b2 shift.
        a0 = tf.where(mirror, -1.0, 1.0)
        a2 = tf.where(mirror, float(width - 1), 0.0) + dx
        zeros, ones = tf.zeros([batch]), tf.ones([batch])
        transforms = tf.stack([a0, zeros, a2, zeros, ones, dy, zeros, zeros], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=[height, width], fill_value=0.0,
            interpolation="NEAREST", fill_mode="CONSTANT")

    if augmentation.erasing_probability:
        # Area 2-40 % of the image, aspect ratio 0.3-3.3 (log-uniform), as in the random-erasing paper.
        area = uniform(3, 0.02, 0.4) * height * width
        log_ratio = tf.random.stateless_uniform([batch], seeds[4], tf.math.log(0.3), tf.math.log(1 / 0.3))
        ratio = tf.exp(log_ratio)
        erase_h = tf.minimum(tf.round(tf.sqrt(area * ratio)), height - 1.0)
        erase_w = tf.minimum(tf.round(tf.sqrt(area / ratio)), width - 1.0)
        corner = tf.random.stateless_uniform([3, batch], seeds[5])
        top = tf.floor(corner[0] * (height - erase_h + 1))
        left = tf.floor(corner[1] * (width - erase_w + 1))
        erase = corner[2] < augmentation.erasing_probability
        rows = tf.range(height, dtype=tf.float32)[None, :, None]
        cols = tf.range(width, dtype=tf.float32)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + erase_h)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + erase_w)[:, None, None])
                  & erase[:, None, None])
        noise = tf.random.stateless_uniform(tf.shape(images), seeds[6])
        images = tf.where(inside[..., None], noise, images)
    return images
