"""The model registry: a new model is one `@register` function.

Each builder returns an uncompiled tf-keras model that maps float32 images in [0, 1] to class probabilities. The
classifier layer is float32 in every model, so that under mixed precision its softmax and the loss never round to
16 bits. `mlp` and `cnn` are the seed notebook's networks, layer for layer; the data pipeline reshapes images to
each model's input shape. tf-keras (Keras 2), not Keras 3: Keras 3's `fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585).
"""

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np

from trainer.training.fashion_mnist import NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], "object"]
    input_shape: Tuple[int, ...]
    # Data-dependent initialisation, run once on a freshly built model before training: f(model, uint8 training
    # images [N, 28, 28, 1]). The weights it sets are ordinary weights: the backup, the plain copy that is
    # evaluated and the SavedModel carry them like any other.
    initialize: Optional[Callable[["object", np.ndarray], None]] = None


_REGISTRY = {}


def register(name: str, input_shape: Tuple[int, ...], initialize=None):
    def decorator(build):
        _REGISTRY[name] = ModelSpec(name=name, build=build, input_shape=input_shape, initialize=initialize)
        return build
    return decorator


def names():
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    return _REGISTRY[name]


@register("mlp", input_shape=(28, 28))
def mlp():
    """The seed's multilayer perceptron: two hidden layers, 109,386 parameters."""
    from tf_keras import layers, models
    return models.Sequential([
        layers.Flatten(input_shape=(28, 28)),
        layers.Dense(128, activation="relu"),
        layers.Dense(64, activation="relu"),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
    ], name="mlp")


@register("cnn", input_shape=(28, 28, 1))
def cnn():
    """The seed's convolutional network: three 3x3 convolutions, two max-pools, 93,322 parameters."""
    from tf_keras import layers, models
    return models.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
    ], name="cnn")


@register("vgg", input_shape=(28, 28, 1))
def vgg():
    """A small VGG-style network with batch normalization (341k parameters): the `strong` recipe's model.

    Five 3x3 convolutions (32, then 64, 64, then 128, 128 filters), each followed by batch normalization and ReLU,
    max-pooling after the first and the third, then the 7x7x128 feature map flattened into the classifier: the
    widest shape whose 18 epochs fit ten minutes on a 2-core CPU (docs/benchmarks.md, "The strong model").
    """
    from tf_keras import Input, Model, layers

    def conv_bn_relu(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)  # the batch norm's shift is the bias
        return layers.ReLU()(layers.BatchNormalization()(x))

    images = Input(shape=(28, 28, 1))
    x = conv_bn_relu(images, 32)
    x = layers.MaxPooling2D()(x)
    x = conv_bn_relu(x, 64)
    x = conv_bn_relu(x, 64)
    x = layers.MaxPooling2D()(x)
    x = conv_bn_relu(x, 128)
    x = conv_bn_relu(x, 128)
    x = layers.Flatten()(x)
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return Model(images, probabilities, name="vgg")


# ---- speedrun: the `speedrun` recipe's network (docs/benchmarks.md, "Speedrun") -------------------------------

WHITENING_SIZE = 3     # the frozen first convolution sees 3x3 patches: 9 pixels, 9 eigenvectors, each +/-
WHITENING_PATCHES = 10_000  # training images whose patches estimate the covariance (the first ones: deterministic)
SPEEDRUN_WIDTHS = (32, 64, 128)
HEAD_SCALE = 1 / 9


def patch_whitening(images, size=WHITENING_SIZE, epsilon=5e-4):
    """The kernel [size, size, 1, 2 size^2] and bias of a convolution that whitens `size`x`size` patches.

    From the covariance of every patch of `images` (uint8 [N, 28, 28, 1], scaled to [0, 1] as the pipeline scales
    them): each eigenvector divided by the square root of its eigenvalue, once as it is and once negated, so that
    the ReLU after it keeps both signs (airbench, Jordan 2024). The bias centres the patches.
    """
    x = images[..., 0].astype(np.float64) / 255.0
    n, height, width = x.shape
    rows = height - size + 1
    patches = np.stack([x[:, i:i + rows, j:j + width - size + 1] for i in range(size) for j in range(size)], -1)
    patches = patches.reshape(-1, size * size)
    mean = patches.mean(axis=0)
    covariance = np.cov(patches - mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    scaled = eigenvectors / np.sqrt(eigenvalues + epsilon)           # [size^2 (pixels), size^2 (components)]
    kernel = np.concatenate([scaled, -scaled], axis=1)               # [pixels, 2 size^2]
    bias = -mean @ kernel
    return kernel.reshape(size, size, 1, -1).astype(np.float32), bias.astype(np.float32)


def initialize_speedrun(model, images):
    whitening = model.get_layer("whitening")
    whitening.set_weights(list(patch_whitening(images[:WHITENING_PATCHES])))


@register("speedrun", input_shape=(28, 28, 1), initialize=initialize_speedrun)
def speedrun(widths=SPEEDRUN_WIDTHS):
    """A wide, shallow network that pools early, after airbench's CIFAR-10 network (the `speedrun` recipe's).

    A frozen 3x3 patch-whitening convolution (18 filters, set from the training images' patch covariance before
    training: `initialize_speedrun`), then three blocks of conv -> max-pool -> batch norm -> ReLU -> conv -> batch
    norm -> ReLU at 26, 13 and 6 pixels, a global max-pool and the classifier. Batch norm learns its shift only
    (its scale stays 1, as in airbench) and follows its statistics quickly (momentum 0.8): the run is short.
    """
    from tf_keras import Input, Model, layers

    def norm_relu(x):
        return layers.ReLU()(layers.BatchNormalization(scale=False, momentum=0.8)(x))

    def block(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = norm_relu(layers.MaxPooling2D()(x))
        return norm_relu(layers.Conv2D(filters, 3, padding="same", use_bias=False)(x))

    images = Input(shape=(28, 28, 1))
    x = layers.Conv2D(2 * WHITENING_SIZE ** 2, WHITENING_SIZE, name="whitening", trainable=False)(images)
    x = layers.ReLU()(x)
    for filters in widths:
        x = block(x, filters)
    x = layers.GlobalMaxPooling2D()(x)
    logits = layers.Dense(NUM_CLASSES, dtype="float32")(x)
    # The logits scaled down (airbench: 1/9), so the max-pooled features start the run near uniform probabilities.
    logits = layers.Rescaling(HEAD_SCALE, dtype="float32")(logits)
    probabilities = layers.Activation("softmax", dtype="float32")(logits)
    return Model(images, probabilities, name="speedrun")
