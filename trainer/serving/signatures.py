"""The SavedModel a run exports: images in, probabilities, class ids and class names out.

Two signatures, with the same outputs (`probabilities` float32 [N, 10], `class_id` int64 [N], `class_name`
string [N]):

- `serving_default`, input `images` (uint8). `[N, 28, 28]` and `[N, 28, 28, 1]` are Fashion-MNIST's own grey
  pixels (a light garment on black) and are used exactly as given. `[N, 28, 28, 3]` (RGB) and `[N, 28, 28, 4]`
  (RGBA) are images from elsewhere: they go through the photo rule of `trainer.serving.photo` (transparency over white,
  ITU-R 601 luminance; a 28x28 image with a dark background is used as is, one with a light background is
  converted as Fashion-MNIST's photos were). Any other shape is refused with an error that names these four;
  nothing is ever reshaped into something else (an RGB batch once came back as three times as many "images").
- `serving_bytes`, input `image_bytes` (string [N]): encoded PNG, JPEG, GIF, BMP or WebP files of any size,
  each decoded (its header's size checked first), then the same photo rule. The name ends in `_bytes`, so
  TensorFlow Serving's and Vertex AI's REST layer base64-decodes `{"b64": ...}` values for it. A 28x28 grey PNG
  of a test image gets exactly `serving_default`'s prediction for that image.

The training-time scaling is part of the graph, and so is the test-time augmentation of a recipe that evaluates
with it (the same views as `trainer.training.evaluation`), so a client never needs to know either.

`with_default_signature` makes the copy whose *default* signature takes encoded images (`python -m
trainer.commands.export`): Vertex AI batch prediction and endpoints only ever call `serving_default` (docs/serving.md).
"""

import tensorflow as tf

from trainer.training import data, evaluation
from trainer.serving import SIGNATURES, photo
ACCEPTED_SHAPES = "[N, 28, 28] or [N, 28, 28, 1] (grey), [N, 28, 28, 3] (RGB) or [N, 28, 28, 4] (RGBA)"


class ServingModule(tf.Module):
    def __init__(self, model, input_shape, test_time_augmentation="none"):
        super().__init__()
        self._test_time_augmentation = test_time_augmentation
        self.model = model
        self._input_shape = tuple(input_shape)
        self._class_names = tf.constant(data.CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.uint8, name="images")], autograph=False)
    def serve(self, images):
        return self._predict(grey_images(images))

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="image_bytes")], autograph=False)
    def serve_bytes(self, image_bytes):
        return self._predict(photo.batch_from_bytes(image_bytes))

    def _predict(self, images):
        # An empty batch answers empty (the convolutions of some models fail on zero images).
        probabilities = tf.cond(
            tf.equal(tf.shape(images)[0], 0),
            lambda: tf.zeros([0, len(data.CLASS_NAMES)], tf.float32),
            lambda: tf.cast(evaluation.predict_probabilities(self.model, data.scale(images, self._input_shape),
                                                           self._test_time_augmentation), tf.float32))
        class_id = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(self._class_names, class_id),
        }


def grey_images(images):
    """uint8 images of one of the ACCEPTED_SHAPES -> uint8 [N, 28, 28]; any other shape is an error."""
    shape = tf.shape(images, out_type=tf.int32)
    rank = tf.rank(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # reading dimensions a low rank lacks gives 0
    is_28x28 = tf.logical_and(tf.equal(padded[1], photo.SIZE), tf.equal(padded[2], photo.SIZE))
    channels = padded[3]
    grey = tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4), tf.equal(channels, 1)))
    colour = tf.logical_and(tf.equal(rank, 4), tf.logical_or(tf.equal(channels, 3), tf.equal(channels, 4)))
    check = tf.debugging.Assert(
        tf.logical_and(is_28x28, tf.logical_or(grey, colour)),
        [f"images must be uint8 {ACCEPTED_SHAPES}; got shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    return tf.cond(grey,
                   lambda: tf.reshape(images, [-1, photo.SIZE, photo.SIZE]),
                   lambda: photo.batch_from_arrays(
                       tf.reshape(images, [-1, photo.SIZE, photo.SIZE, channels])))


def export_saved_model(model, input_shape, path, test_time_augmentation="none"):
    module = ServingModule(model, input_shape, test_time_augmentation)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve,
                                                  "serving_bytes": module.serve_bytes})
    return path


def with_default_signature(source, target, default="serving_bytes"):
    """Copies the SavedModel at `source` (local) to `target` (local) with both signatures, `default` being its
    `serving_default`; the arrays signature is also kept as `serving_images`, the bytes one as `serving_bytes`.

    It wraps the source's own `serving_default`, so a SavedModel exported before `serving_bytes` existed gets
    it too (and colour arrays are checked and converted as in a new export).
    """
    if default not in SIGNATURES:
        raise ValueError(f"--default_signature must be one of {', '.join(SIGNATURES)}")
    loaded = tf.saved_model.load(source)
    inner = loaded.signatures["serving_default"]
    module = tf.Module()
    module.source = loaded

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.uint8, name="images")], autograph=False)
    def serve(images):
        return dict(inner(images=grey_images(images)))

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="image_bytes")], autograph=False)
    def serve_bytes(image_bytes):
        return dict(inner(images=photo.batch_from_bytes(image_bytes)))

    module.serve, module.serve_bytes = serve, serve_bytes
    functions = {"serving_default": serve, "serving_bytes": serve_bytes}
    tf.saved_model.save(module, target, signatures={"serving_default": functions[default],
                                                    "serving_images": serve, "serving_bytes": serve_bytes})
    return target

