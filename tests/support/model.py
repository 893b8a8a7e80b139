"""The small exported model the serving tests share (test_export, test_predict, test_photo, test_serving_launch):
a CNN fitted for a moment on 1,200 training images and exported in-process, and the copy `python -m
trainer.commands.export` makes of it for Vertex AI. The session fixtures `exported_model`, `signatures` and
`vertex_copy` (support/fixtures.py) build each once, in pytest's temporary folders."""

import functools
import os

from support import data as support_data


@functools.lru_cache(maxsize=None)
def sample_images(count=64):
    """The first `count` test images (uint8 [N, 28, 28]) and labels (arrays, decoded once)."""
    from trainer.training import data
    images, labels = data.load(support_data.builder(), f"test[:{count}]")
    return images[..., 0], labels


def export_small_cnn(run):
    """A run folder `run` (with saved_model/) of a CNN briefly fitted on 1,200 training images."""
    import tensorflow as tf
    from trainer.training import data, models
    from trainer.serving.signatures import export_saved_model
    tf.keras.utils.set_random_seed(0)
    images, labels = data.load(support_data.builder(), "train[:1200]")
    spec = models.get("cnn")
    model = spec.build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images.astype("float32") / 255.0, labels, epochs=3, batch_size=32, verbose=0)
    export_saved_model(model, spec.input_shape, os.path.join(run, "saved_model"), "flip")
    return str(run)


def load_signatures(run):
    """(the loaded SavedModel, its serving_default, its serving_bytes)."""
    import tensorflow as tf
    loaded = tf.saved_model.load(os.path.join(run, "saved_model"))
    return loaded, loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]


def vertex_copy(signatures, folder):
    """`python -m trainer.commands.export`'s copy for Vertex AI (serving_default takes image_bytes), made in `folder`
    from a SavedModel of the kind exported before serving_bytes existed (only a uint8 [N, 28, 28] default)."""
    import tensorflow as tf
    from trainer.serving.signatures import with_default_signature
    loaded, serve, _ = signatures
    old = tf.Module()
    old.inner = loaded

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def legacy(images):
        return dict(serve(images=images))

    old.legacy = legacy
    tf.saved_model.save(old, os.path.join(folder, "old"), signatures={"serving_default": legacy})
    return with_default_signature(os.path.join(folder, "old"), os.path.join(folder, "vertex"))
