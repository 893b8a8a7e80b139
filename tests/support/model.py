"""The small exported model the serving tests share (test_export, test_predict, test_photo, test_serving_launch):
a CNN fitted for a moment on 1,200 training images and exported in-process, once per session, and the copy
`python -m trainer.export` makes of it for Vertex AI."""

import atexit
import functools
import os
import shutil
import tempfile

from support import data as support_data


@functools.lru_cache(maxsize=None)
def sample_images(count=64):
    """The first `count` test images (uint8 [N, 28, 28]) and labels."""
    from trainer import data
    images, labels = data.load(support_data.builder(), f"test[:{count}]")
    return images[..., 0], labels


@functools.lru_cache(maxsize=None)
def exported_model():
    """A run folder (with saved_model/) of a CNN briefly fitted on 1,200 training images; built once per session."""
    import tensorflow as tf
    from trainer import data, models
    from trainer.serving.signatures import export_saved_model
    tf.keras.utils.set_random_seed(0)
    images, labels = data.load(support_data.builder(), "train[:1200]")
    spec = models.get("cnn")
    model = spec.build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images.astype("float32") / 255.0, labels, epochs=3, batch_size=32, verbose=0)
    run = tempfile.mkdtemp(prefix="fmnist-test-run-")
    atexit.register(shutil.rmtree, run, ignore_errors=True)
    export_saved_model(model, spec.input_shape, os.path.join(run, "saved_model"), "flip")
    return run


@functools.lru_cache(maxsize=None)
def signatures():
    import tensorflow as tf
    loaded = tf.saved_model.load(os.path.join(exported_model(), "saved_model"))
    return loaded, loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]


@functools.lru_cache(maxsize=None)
def vertex_copy():
    """`python -m trainer.export`'s copy for Vertex AI (serving_default takes image_bytes), made from a SavedModel
    of the kind exported before serving_bytes existed (only a uint8 [N, 28, 28] default); built once."""
    import tensorflow as tf
    from trainer.serving.signatures import with_default_signature
    loaded, serve, _ = signatures()
    old = tf.Module()
    old.inner = loaded

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def legacy(images):
        return dict(serve(images=images))

    old.legacy = legacy
    folder = tempfile.mkdtemp(prefix="fmnist-test-vertex-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    tf.saved_model.save(old, os.path.join(folder, "old"), signatures={"serving_default": legacy})
    return with_default_signature(os.path.join(folder, "old"), os.path.join(folder, "vertex"))
