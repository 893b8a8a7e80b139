"""trainer.serving.photo: headers read without decoding, the Fashion-MNIST-like rule, and the paper's conversion."""

import numpy as np
import pytest

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from support.images import encode, png_header_only, product_photo
from support.model import sample_images


def header(contents):
    import tensorflow as tf
    from trainer.serving import photo
    kind, height, width = (int(v) for v in photo.header(tf.constant(contents)))
    return (photo.FORMATS[kind] if kind >= 0 else None), height, width


def convert(contents, **variant):
    import tensorflow as tf
    from trainer.serving import photo
    return photo.to_fashion_mnist(photo.decode(tf.constant(contents)), **variant).numpy()


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                                          ("WEBP", {"lossless": True})])
def test_header_gives_the_size_without_decoding(fmt, options):
    array = np.zeros((37, 53, 3), np.uint8)
    expected = "WebP" if fmt == "WEBP" else fmt
    assert header(encode(array, fmt, **options)) == (expected, 37, 53)


def test_header_of_alpha_webp_and_of_what_is_not_an_image():
    assert header(encode(np.zeros((9, 11, 4), np.uint8), "WEBP"))[1:] == (9, 11)  # VP8X (extended) header
    for contents in (b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM"):
        assert header(contents) == (None, 0, 0)


def test_a_decompression_bomb_is_refused_before_decoding():
    import tensorflow as tf
    bomb = png_header_only(100_000, 100_000)  # 10^10 pixels declared in 33 bytes
    assert header(bomb) == ("PNG", 100_000, 100_000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="refused before decoding"):
        convert(bomb)


def test_fashion_mnist_like_images_are_used_exactly_as_they_are():
    images, _ = sample_images()
    for image in images[:16]:
        np.testing.assert_array_equal(convert(encode(image)), image)
        np.testing.assert_array_equal(convert(encode(np.repeat(image[..., None], 3, -1))), image)


def test_a_product_photo_converts_back_close_to_the_original():
    images, _ = sample_images()
    for image in images[:6]:
        converted = convert(product_photo(image))
        assert converted.shape == (28, 28) and converted.dtype == np.uint8
        assert np.abs(converted.astype(int) - image).mean() < 25, "far from the original"
        assert converted[0, 0] == 0 and converted[-1, -1] == 0  # background black, like Fashion-MNIST's


def test_light_garment_on_a_dark_backdrop_is_not_negated():
    images, _ = sample_images()
    converted = convert(product_photo(images[0], background=0))
    assert np.abs(converted.astype(int) - images[0]).mean() < 25


def test_a_grey_backdrop_becomes_black():
    images, _ = sample_images()
    converted = convert(product_photo(images[1], background=200))
    assert converted[0, 0] == 0 and converted[-1, -1] == 0
    assert np.abs(converted.astype(int) - images[1]).mean() < 35


def test_transparency_is_composited_over_white():
    images, _ = sample_images()
    dark = 255 - images[2]
    opaque_white = encode(np.repeat(dark[..., None], 3, -1))
    cut_out = np.zeros((28, 28, 4), np.uint8)  # black where transparent: only the alpha says "background"
    cut_out[..., :3] = np.where(images[2][..., None] > 0, dark[..., None], 0)
    cut_out[..., 3] = np.where(images[2] > 0, 255, 0)
    np.testing.assert_array_equal(convert(encode(cut_out)), convert(opaque_white))


def test_blank_and_huge_images_do_not_break_the_conversion():
    blank = convert(encode(np.full((40, 60, 3), 255, np.uint8)))
    assert blank.shape == (28, 28) and blank.max() == 0
    huge = np.full((2400, 1800, 3), 255, np.uint8)
    huge[600:1800, 500:1300] = 30
    converted = convert(encode(huge, "JPEG"))
    assert converted.shape == (28, 28) and converted[14, 14] > 200 and converted[14, 0] == 0


def test_the_papers_variants_are_available():
    images, _ = sample_images()
    photo_bytes = product_photo(images[3])
    for variant in ({"resize_method": "nearest"}, {"sharpen": 0.0}):
        assert convert(photo_bytes, **variant).shape == (28, 28)


def test_luminance_is_itu_r_601():
    import tensorflow as tf
    from trainer.serving import photo
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    reference = tf.image.rgb_to_grayscale(rgb).numpy()[..., 0].astype(int)
    ours = np.round(photo.luminance(tf.constant(rgb, tf.float32)).numpy()).astype(int)
    assert np.abs(ours - reference).max() <= 1


def test_serving_and_the_photo_module_agree_on_the_rule(signatures):
    """28x28 on a light background is converted (negated), in the signature as in trainer.serving.photo."""
    images, _ = sample_images()
    _, serve, serve_bytes = signatures
    light = np.repeat((255 - images[:4])[..., None], 3, -1)
    through_arrays = serve(images=light)["probabilities"].numpy()
    through_bytes = serve_bytes(image_bytes=np.array([encode(i) for i in light], dtype=object))
    np.testing.assert_array_equal(through_arrays, through_bytes["probabilities"].numpy())
    assert not np.array_equal(through_arrays, serve(images=light.mean(-1).astype(np.uint8))["probabilities"].numpy())
