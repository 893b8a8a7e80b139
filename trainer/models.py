"""The model registry: a new model is one `@register` function.

Each builder returns an uncompiled tf-keras model that maps float32 images in [0, 1] to class probabilities. The
classifier layer is float32 in every model, so that under mixed precision its softmax and the loss never round to
16 bits. `mlp` and `cnn` are the seed notebook's networks, layer for layer; the data pipeline reshapes images to
each model's input shape. tf-keras (Keras 2), not Keras 3: Keras 3's `fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585).
"""

import dataclasses
from typing import Callable, Tuple

from trainer.fashion_mnist import NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], "object"]
    input_shape: Tuple[int, ...]


_REGISTRY = {}


def register(name: str, input_shape: Tuple[int, ...]):
    def decorator(build):
        _REGISTRY[name] = ModelSpec(name=name, build=build, input_shape=input_shape)
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
