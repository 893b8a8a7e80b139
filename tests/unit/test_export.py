"""The exported SavedModel's two signatures: shapes accepted and refused, colour, encoded images, re-export.

One small CNN (tests/support/model.py), fitted for a moment and exported in-process, serves every test here.
"""

import numpy as np
import pytest

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from support.images import encode
from support.model import sample_images


def probabilities(signature, **inputs):
    import tensorflow as tf
    return signature(**{k: tf.constant(v) for k, v in inputs.items()})["probabilities"].numpy()


def test_grey_layouts_and_grey_colour_images_get_identical_predictions(signatures):
    _, serve, _ = signatures
    images, labels = sample_images()
    reference = probabilities(serve, images=images)
    assert reference.shape == (64, 10)
    np.testing.assert_array_equal(probabilities(serve, images=images[..., None]), reference)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    np.testing.assert_array_equal(probabilities(serve, images=rgb), reference)
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)
    np.testing.assert_array_equal(probabilities(serve, images=rgba), reference)
    assert np.mean(reference.argmax(1) == labels) > 0.5  # the model learnt something: the comparisons mean something


def test_rgb_batch_is_not_folded_into_more_images(signatures):
    """The bug of issue 12: [2, 28, 28, 3] used to come back as six predictions."""
    _, serve, _ = signatures
    images, _ = sample_images()
    out = serve(images=np.repeat(images[:2, :, :, None], 3, axis=-1))
    assert out["probabilities"].shape == (2, 10) and out["class_name"].shape == (2,)


def test_colour_is_converted_by_luminance(signatures):
    import tensorflow as tf
    _, serve, _ = signatures
    images, _ = sample_images()
    rng = np.random.default_rng(0)
    tint = rng.uniform(0.3, 1.0, size=(len(images), 1, 1, 3))
    rgb = np.round(images[..., None] * tint).astype(np.uint8)  # coloured garments, still on black
    grey = tf.image.rgb_to_grayscale(rgb).numpy()[..., 0]  # the same weights; it rounds a little differently
    got, expected = probabilities(serve, images=rgb), probabilities(serve, images=grey)
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95


def test_transparent_colour_image_goes_through_the_photo_rule(signatures):
    _, serve, _ = signatures
    images, _ = sample_images()
    # A dark garment on a transparent background: over white, then converted (negated) like a product photo.
    rgba = np.zeros((4, 28, 28, 4), np.uint8)
    rgba[..., :3] = (255 - images[:4])[..., None]
    rgba[..., 3] = np.where(images[:4] > 0, 255, 0)
    predicted = serve(images=rgba)["class_id"].numpy()
    assert np.mean(predicted == serve(images=images[:4])["class_id"].numpy()) >= 0.5


@pytest.mark.parametrize("shape", [(2, 28, 28, 2), (2, 28, 28, 5), (28, 28), (2, 32, 32), (2, 28, 28, 3, 1), (2,),
                                   (2, 28, 27, 1)])
def test_other_shapes_are_refused_with_the_accepted_ones_named(shape, signatures):
    import tensorflow as tf
    _, serve, _ = signatures
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        serve(images=tf.zeros(shape, tf.uint8))
    message = raised.value.message
    assert "[N, 28, 28] or [N, 28, 28, 1] (grey), [N, 28, 28, 3] (RGB) or [N, 28, 28, 4] (RGBA)" in message
    assert "got shape" in message and " ".join(str(d) for d in shape) in message


def test_empty_batch_gives_empty_outputs(signatures):
    _, serve, serve_bytes = signatures
    assert serve(images=np.zeros((0, 28, 28), np.uint8))["probabilities"].shape == (0, 10)
    assert serve_bytes(image_bytes=np.zeros((0,), object))["class_id"].shape == (0,)


def test_serving_bytes_png_gives_exactly_serving_defaults_prediction(signatures):
    _, serve, serve_bytes = signatures
    images, _ = sample_images()
    pngs = np.array([encode(image) for image in images], dtype=object)
    for key in ("probabilities", "class_id", "class_name"):
        np.testing.assert_array_equal(serve_bytes(image_bytes=pngs)[key].numpy(), serve(images=images)[key].numpy())


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 95}), ("GIF", {}), ("BMP", {}),
                                          ("WEBP", {"lossless": True})])
def test_serving_bytes_reads_every_format(fmt, options, signatures):
    _, serve, serve_bytes = signatures
    images, _ = sample_images()
    encoded = np.array([encode(np.repeat(image[..., None], 3, -1), fmt, **options) for image in images[:16]],
                       dtype=object)
    got = serve_bytes(image_bytes=encoded)["class_id"].numpy()
    assert np.mean(got == serve(images=images[:16])["class_id"].numpy()) >= 0.8


def test_serving_bytes_refuses_what_is_not_an_image(signatures):
    import tensorflow as tf
    _, _, serve_bytes = signatures
    images, _ = sample_images()
    with pytest.raises(tf.errors.InvalidArgumentError, match="not an image this model reads"):
        serve_bytes(image_bytes=np.array([encode(images[0]), b"hello"], dtype=object))


def test_re_export_for_vertex_makes_bytes_the_default_even_for_an_old_export(signatures, vertex_copy):
    """serving_default takes image_bytes, serving_images keeps the arrays, and the old export's reshape bug is
    gone in the copy."""
    import tensorflow as tf
    _, serve, _ = signatures
    images, _ = sample_images()
    loaded = tf.saved_model.load(vertex_copy)
    assert set(loaded.signatures) == {"serving_default", "serving_bytes", "serving_images"}
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    pngs = np.array([encode(image) for image in images[:8]], dtype=object)
    expected = probabilities(serve, images=images[:8])
    np.testing.assert_array_equal(probabilities(default, image_bytes=pngs), expected)
    np.testing.assert_array_equal(probabilities(loaded.signatures["serving_images"], images=images[:8]), expected)
    rgb = np.repeat(images[:2, ..., None], 3, -1)
    assert loaded.signatures["serving_images"](images=tf.constant(rgb))["class_id"].shape == (2,)
