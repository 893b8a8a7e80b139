"""The SavedModel a run exports: images in, probabilities, class ids and class names out.

Two signatures, with the same outputs (`probabilities` float32 [N, 10], `class_id` int64 [N], `class_name`
string [N]):

- `serving_default`, input `images` (uint8). `[N, 28, 28]` and `[N, 28, 28, 1]` are Fashion-MNIST's own grey
  pixels (a light garment on black) and are used exactly as given. `[N, 28, 28, 3]` (RGB) and `[N, 28, 28, 4]`
  (RGBA) are images from elsewhere: they go through the photo rule of `trainer.photo` (transparency over white,
  ITU-R 601 luminance; a 28x28 image with a dark background is used as is, one with a light background is
  converted as Fashion-MNIST's photos were). Any other shape is refused with an error that names these four;
  nothing is ever reshaped into something else (an RGB batch once came back as three times as many "images").
- `serving_bytes`, input `image_bytes` (string [N]): encoded PNG, JPEG, GIF, BMP or WebP files of any size,
  each decoded (its header's size checked first), then the same photo rule. The name ends in `_bytes`, so
  TensorFlow Serving's and Vertex AI's REST layer base64-decodes `{"b64": ...}` values for it. A 28x28 grey PNG
  of a test image gets exactly `serving_default`'s prediction for that image.

The training-time scaling is part of the graph, and so is the test-time augmentation of a recipe that evaluates
with it (the same views as `trainer.evaluate`), so a client never needs to know either.

`python -m trainer.export --model_dir=RUN --output_dir=DIR --default_signature=serving_bytes` writes a copy of a
run's SavedModel whose *default* signature takes encoded images: for Vertex AI batch prediction and endpoints,
which only ever call `serving_default` (docs/serving.md).
"""

import sys

import tensorflow as tf

from trainer import data, evaluate, photo

SIGNATURES = ("serving_default", "serving_bytes")
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
            lambda: tf.cast(evaluate.predict_probabilities(self.model, data.scale(images, self._input_shape),
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


def main(argv):
    """`python -m trainer.export --model_dir=RUN --output_dir=DIR [--default_signature=serving_bytes]`.

    Exit status as the trainer's: 0 written; 2 a mistake to fix (no SavedModel there, no bucket, no access);
    75 a transient storage error (rerun).
    """
    import argparse
    import os
    import tempfile

    from trainer import predict  # the model's download from gs://
    from trainer.errors import PERMANENT, RETRY, RetryableError, UserError
    from trainer.outputs import is_gcs
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description=with_default_signature.__doc__)
    parser.add_argument("--model_dir", required=True, help="a run folder or its saved_model/, local or gs://")
    parser.add_argument("--output_dir", required=True, help="where the copy goes, local or gs://")
    parser.add_argument("--default_signature", default="serving_bytes", choices=SIGNATURES,
                        help="which signature becomes serving_default (serving_default: only add serving_bytes "
                             "to a SavedModel exported before it existed)")
    args = parser.parse_args(argv)

    def fail(message, status=PERMANENT):
        print(f"python -m trainer.export: error: {message}", file=sys.stderr)
        return status

    with tempfile.TemporaryDirectory(prefix="fmnist-export-") as scratch:
        try:
            source = args.model_dir.rstrip("/")
            if is_gcs(source):
                source = predict._download_model(source, os.path.join(scratch, "source"))
            if os.path.isdir(os.path.join(source, "saved_model")):
                source = os.path.join(source, "saved_model")
            if not os.path.exists(os.path.join(source, "saved_model.pb")):
                return fail(f"no SavedModel in --model_dir={args.model_dir} (a run folder with saved_model/, or "
                            "saved_model/ itself)")
            target = os.path.join(scratch, "target") if is_gcs(args.output_dir) else args.output_dir
            with_default_signature(source, target, args.default_signature)
            if is_gcs(args.output_dir):
                _upload(target, args.output_dir.rstrip("/"))
        except UserError as error:
            return fail(str(error))
        except RetryableError as error:
            return fail(str(error), RETRY)
    takes = "image_bytes (encoded images)" if args.default_signature == "serving_bytes" else "images (uint8 arrays)"
    print(f"wrote {args.output_dir}: serving_default takes {takes}; signatures serving_default, serving_bytes, "
          "serving_images")
    return 0


def _upload(folder, url):
    from google.api_core import exceptions as api
    from trainer import outputs
    from trainer.errors import RetryableError, UserError
    output = outputs.GcsOutput(url)
    try:
        output.upload_folder(folder)
    except api.NotFound:
        raise UserError(f"--output_dir={url}: bucket gs://{output.bucket_name} does not exist.") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"cannot write --output_dir={url} ({error.__class__.__name__}).") from None
    except outputs.transient_errors() as error:
        raise RetryableError(f"uploading to {url} failed ({error.__class__.__name__}): rerun.") from None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
