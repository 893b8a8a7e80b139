"""Any image -> a Fashion-MNIST image (28x28 uint8, a light garment on black), in TensorFlow ops.

One implementation, used wherever an image enters a model: the SavedModel's `serving_bytes` signature (encoded
files), `serving_default` given colour arrays, and the batch prediction job (`trainer.commands.predict`).

**The rule.** An image that is 28x28 and has a dark background (the median luminance of its outermost ring of
pixels is below 128) is Fashion-MNIST-like and used as it is (its luminance). Anything else - another size, or
a light background - is converted the way Fashion-MNIST itself was made from Zalando's product photos (Xiao,
Rasul, Vollgraf 2017, arXiv:1708.07747, section 2):

1. trim the edges whose pixels are close to a corner pixel's colour (RMS distance over R, G, B within 5 % of
   255),
2. resize so that the longest edge is 28 pixels,
3. sharpen (a Gaussian of radius 1 and standard deviation 1, unsharp mask),
4. centre on a 28x28 canvas,
5. negate, so the background becomes black,
6. 8-bit grey (ITU-R 601 luminance: `tf.image.rgb_to_grayscale`'s weights, rounded to the nearest level).

Where and why this differs from the paper (area resizing, negation relative to the background, the order of
the steps, transparency), with the figures: docs/serving.md, "How a photo becomes a Fashion-MNIST image".

Decoding: PNG, JPEG, GIF (its first frame), BMP and WebP (not animated ones: TensorFlow 2.21's decoder corrupted
the heap on one, and the process aborted). The header's width and height are read before anything is decoded, and
an image over `MAX_PIXELS` is refused unread (a small file can declare a picture of billions of pixels: a
decompression bomb). The header is one size: a GIF's frames are walked too (frames.gif_pixels_op: a frame may be
larger than the screen), and fmnist-predict also counts APNG and WebP frames (frames.pixels).
"""

import tensorflow as tf

from trainer.serving import frames

SIZE = 28
FUZZ = 0.05            # trimming: a pixel within 5 % (RMS over R, G, B) of a corner's colour is background
DARK_BELOW = 128       # the rule: a 28x28 image whose outer ring has a median luminance below this is as is
MAX_SIDE = 1024        # larger images are area-reduced to this first (memory of the conversion)
TRIM_SIDE = 192        # the trim's bounding box is found on a copy at most this large (its cost)
MAX_PIXELS = 50_000_000  # refused before decoding: 50 megapixels is more than any camera photo of a product
SHARPEN_AMOUNT = 1.0
RESIZE_METHOD = "area"  # the paper subsamples ("nearest"); see the module docstring
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP")

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of tf.image.rgb_to_grayscale


# --------------------------------------------------------------------------------------------------- headers

def _uint(padded, offset, length, little_endian):
    """An unsigned integer of `length` bytes at `offset` of a (zero-padded) string, as int64."""
    b = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, length), tf.uint8), tf.int64)
    weights = tf.constant([256 ** i for i in range(length)] if little_endian
                          else [256 ** i for i in reversed(range(length))], tf.int64)
    return tf.reduce_sum(b * weights)


def header(contents):
    """(format index into FORMATS or -1, height, width) from an encoded image's header, without decoding it.

    Unknown formats, and files too short for their header, give (-1, 0, 0). A JPEG's size comes from
    `tf.io.extract_jpeg_shape`, which reads its markers only (and fails on a header that is not JPEG's).
    Every other format's fields are read at fixed offsets and the right ones selected, without branches (each
    branch of a graph costs tracing time).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    length = tf.strings.length(contents)
    padded = contents + b"\0" * 32  # so that no read at a fixed offset runs past the end

    def starts(prefix, offset=0):
        return tf.equal(tf.strings.substr(padded, offset, len(prefix)), prefix)

    int64 = lambda v: tf.constant(v, tf.int64)  # noqa: E731
    is_png = starts(b"\x89PNG\r\n\x1a\n") & (length >= 24)
    is_jpeg = starts(b"\xff\xd8") & (length >= 4)
    is_gif = (starts(b"GIF87a") | starts(b"GIF89a")) & (length >= 10)
    is_bmp = starts(b"BM") & (length >= 26)
    is_webp = starts(b"RIFF") & starts(b"WEBP", 8) & (length >= 30)
    vp8, vp8l, vp8x = starts(b"VP8 ", 12), starts(b"VP8L", 12), starts(b"VP8X", 12)
    is_webp = is_webp & (vp8 | vp8l | vp8x)

    bmp_height = _uint(padded, 22, 4, True)
    bmp_height = tf.where(bmp_height >= 2 ** 31, 2 ** 32 - bmp_height, bmp_height)  # negative: stored top-down
    lossless = _uint(padded, 21, 4, True)  # VP8L: 14 bits each of width - 1 and height - 1
    webp_height = tf.where(vp8, _uint(padded, 28, 2, True) % 16384,  # VP8: 14 bits each, after the start code
                           tf.where(vp8l, (lossless // 16384) % 16384 + 1, _uint(padded, 27, 3, True) + 1))
    webp_width = tf.where(vp8, _uint(padded, 26, 2, True) % 16384,
                          tf.where(vp8l, lossless % 16384 + 1, _uint(padded, 24, 3, True) + 1))  # VP8X: canvas
    jpeg_shape = tf.cond(is_jpeg, lambda: tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)[:2],
                         lambda: tf.zeros([2], tf.int64))

    kind = tf.where(is_png, int64(0), tf.where(is_jpeg, int64(1), tf.where(is_gif, int64(2), tf.where(
        is_bmp, int64(3), tf.where(is_webp, int64(4), int64(-1))))))
    height = tf.gather(tf.stack([_uint(padded, 20, 4, False), jpeg_shape[0], _uint(padded, 8, 2, True),
                                 bmp_height, webp_height, int64(0)]), tf.where(kind < 0, int64(5), kind))
    width = tf.gather(tf.stack([_uint(padded, 16, 4, False), jpeg_shape[1], _uint(padded, 6, 2, True),
                                _uint(padded, 18, 4, True), webp_width, int64(0)]), tf.where(kind < 0, int64(5), kind))
    return kind, height, width


# ---------------------------------------------------------------------------------------------- decoding

def decode(contents, max_pixels=MAX_PIXELS):
    """An encoded image -> uint8 [H, W, 4] (RGBA), refusing an unknown format or an oversized one *before*
    decoding. Errors are `tf.errors.InvalidArgumentError`s whose message says what was wrong."""
    kind, height, width = header(contents)
    checks = [  # raw Assert ops: tf.debugging's wrap each in a branch, which costs tracing time
        tf.raw_ops.Assert(condition=kind >= 0, data=[
            "not an image this model reads (PNG, JPEG, GIF, BMP or WebP), or its header is cut short"]),
        tf.raw_ops.Assert(condition=height * width <= max_pixels, data=[
            f"refused before decoding: the header declares more than {max_pixels:,} pixels (a decompression "
            "bomb?)"]),
        tf.raw_ops.Assert(condition=tf.logical_not(_animated_webp(contents)), data=[
            "an animated WebP: refused unread (TensorFlow's decoder corrupts memory on them)"]),
    ]
    with tf.control_dependencies(checks):  # a GIF's frames may be larger than its screen, the header's size
        checks.append(tf.raw_ops.Assert(condition=frames.gif_pixels_op(contents) <= max_pixels, data=[
            f"refused before decoding: the GIF's frames would hold more than {max_pixels:,} pixels (a "
            "decompression bomb?)"]))
    with tf.control_dependencies(checks):
        contents = tf.identity(contents)
    image = tf.io.decode_image(contents, channels=0, expand_animations=False, dtype=tf.uint8)
    return to_rgba(image)


def _animated_webp(contents):
    """VP8X's animation flag (frames.animated_webp, in ops): TensorFlow's WebP decoder corrupts the heap on one."""
    padded = contents + b"\0" * 32
    flags = tf.io.decode_raw(tf.strings.substr(padded, 20, 1), tf.uint8)[0]
    return (tf.equal(tf.strings.substr(padded, 0, 4), b"RIFF") & tf.equal(tf.strings.substr(padded, 8, 8), b"WEBPVP8X")
            & tf.not_equal(tf.bitwise.bitwise_and(flags, 2), 0))


def to_rgba(image):
    """uint8 [H, W, C] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> uint8 [H, W, 4]."""
    image = tf.convert_to_tensor(image, tf.uint8)
    channels = tf.shape(image)[-1]
    rgb = tf.gather(image, tf.where(channels >= 3, tf.constant([0, 1, 2]), tf.constant([0, 0, 0])), axis=-1)
    has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
    alpha = tf.where(has_alpha, tf.gather(image, [channels - 1], axis=-1), tf.constant(255, tf.uint8))
    return tf.concat([rgb, alpha], -1)


# ------------------------------------------------------------------------------------------- the rule

def luminance(rgb):
    """float [..., 3] -> float [...], ITU-R BT.601 (tf.image.rgb_to_grayscale's weights)."""
    return tf.tensordot(rgb, tf.constant(_LUMA, rgb.dtype), axes=[[-1], [0]])


def over_white(rgba):
    """uint8 [H, W, 4] -> float32 RGB [H, W, 3] in 0-255, transparency composited over white."""
    rgba = tf.cast(rgba, tf.float32)  # uint8, or float in 0-255
    alpha = rgba[..., 3:] / 255.0
    return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)


def is_fashion_mnist_like(gray):
    """True for a 28x28 image (float luminance [H, W]) whose outer ring of pixels has a median below 128."""
    ring = tf.concat([gray[0, :], gray[-1, :], gray[1:-1, 0], gray[1:-1, -1]], 0)
    return tf.logical_and(tf.reduce_all(tf.equal(tf.shape(gray), [SIZE, SIZE])), _median(ring) < DARK_BELOW)


def _median(values):
    ordered = tf.sort(values)
    n = tf.shape(ordered)[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0


def to_fashion_mnist(rgba, resize_method=None, sharpen=None):
    """uint8 RGBA [H, W, 4] -> uint8 [28, 28]: as is when Fashion-MNIST-like, else converted (module docstring).

    `resize_method` and `sharpen` (amount) override the defaults, for bench/photos.py's comparison.
    """
    rgb = over_white(_limit_size(rgba))  # area-reduced from uint8: no full-size float copy of a big photo
    gray = luminance(rgb)
    # Both, then the right one (a branch would cost more tracing time than converting a 28x28 image costs).
    as_is = _to_uint8(tf.image.resize_with_crop_or_pad(gray[..., None], SIZE, SIZE)[..., 0])
    converted = convert(rgb, resize_method or RESIZE_METHOD, SHARPEN_AMOUNT if sharpen is None else sharpen)
    return tf.where(is_fashion_mnist_like(gray), as_is, converted)


def convert(rgb, resize_method=RESIZE_METHOD, sharpen=SHARPEN_AMOUNT):
    """Fashion-MNIST's conversion of a photo (float RGB [H, W, 3], 0-255) -> uint8 [28, 28]."""
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]

    # 1. Trim: the bounding box of the pixels that differ from every corner's colour by more than FUZZ, found on
    # a copy of at most TRIM_SIDE pixels a side (area-reduced) and scaled back outwards: the trim then costs the
    # same for any photo, and its box is off by at most one pixel of that copy.
    reduced = _limit_size(rgb, TRIM_SIDE)
    small_h, small_w = tf.shape(reduced)[0], tf.shape(reduced)[1]
    corners = tf.stack([reduced[0, 0], reduced[0, small_w - 1], reduced[small_h - 1, 0],
                        reduced[small_h - 1, small_w - 1]])
    squared = tf.reduce_mean(tf.square(reduced[:, :, None, :] - corners[None, None]), -1)
    foreground = tf.reduce_min(squared, -1) > (FUZZ * 255.0) ** 2
    rows, cols = tf.reduce_any(foreground, 1), tf.reduce_any(foreground, 0)
    empty = tf.logical_not(tf.reduce_any(rows))  # a blank image: keep all of it
    first = lambda mask: tf.cast(tf.argmax(tf.cast(mask, tf.int32)), tf.int32)  # noqa: E731  (first True)

    def scaled(index, small, full, up):  # integer arithmetic: a float division is not exact once optimized
        return (index * full + (small - 1 if up else 0)) // small

    top = tf.where(empty, 0, scaled(first(rows), small_h, height, False))
    bottom = tf.where(empty, height, tf.minimum(height, scaled(small_h - first(tf.reverse(rows, [0])), small_h,
                                                               height, True)))
    left = tf.where(empty, 0, scaled(first(cols), small_w, width, False))
    right = tf.where(empty, width, tf.minimum(width, scaled(small_w - first(tf.reverse(cols, [0])), small_w,
                                                            width, True)))
    gray = luminance(rgb[top:bottom, left:right])
    background = tf.reduce_mean(luminance(corners))

    # 2. The longest edge to 28.
    h, w = tf.cast(bottom - top, tf.float32), tf.cast(right - left, tf.float32)
    scale = SIZE / tf.maximum(h, w)
    new_h = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, SIZE)
    new_w = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, SIZE)
    small = tf.image.resize(gray[..., None], tf.stack([new_h, new_w]), method=resize_method,
                            antialias=resize_method not in ("area", "nearest"))[..., 0]

    # 5 (before 3, so that sharpening and the canvas see the final polarity). The background goes to 0.
    light = background >= 128.0
    small = tf.where(light, (background - small) * 255.0 / tf.maximum(background, 1.0),
                     (small - background) * 255.0 / tf.maximum(255.0 - background, 1.0))
    small = tf.clip_by_value(small, 0.0, 255.0)

    # 3. Sharpen: unsharp mask with a 3x3 Gaussian (radius 1, sigma 1), edges mirrored.
    if sharpen:
        small = tf.clip_by_value(small + sharpen * (small - _blur(small)), 0.0, 255.0)

    # 4. Centre on the 28x28 canvas (black: the background after step 5).
    pad_top, pad_left = (SIZE - new_h) // 2, (SIZE - new_w) // 2
    canvas = tf.pad(small, [[pad_top, SIZE - new_h - pad_top], [pad_left, SIZE - new_w - pad_left]])
    return _to_uint8(tf.ensure_shape(canvas, [SIZE, SIZE]))


def _limit_size(image, side=MAX_SIDE):
    """At most `side` pixels on a side (area interpolation), as float32; smaller images are copied exactly."""
    size = tf.shape(image)[:2]
    scale = tf.minimum(1.0, side / tf.cast(tf.reduce_max(size), tf.float32))
    target = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32))
    return tf.image.resize(image, target, method="area")  # the same size: an exact copy


def _blur(gray):
    weights = tf.exp(-tf.square(tf.constant([-1.0, 0.0, 1.0])) / 2.0)
    kernel = weights[:, None] * weights[None, :]
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(gray, [[1, 1], [1, 1]], mode="SYMMETRIC")
    return tf.nn.conv2d(padded[None, :, :, None], kernel[:, :, None, None], strides=1, padding="VALID")[0, :, :, 0]


def _to_uint8(gray):
    return tf.cast(tf.round(tf.clip_by_value(gray, 0.0, 255.0)), tf.uint8)


# ------------------------------------------------------------------------------------------ entry points

def from_bytes(contents, max_pixels=MAX_PIXELS):
    """One encoded image (scalar string) -> uint8 [28, 28]: decoded (size checked first), then the rule."""
    return to_fashion_mnist(decode(contents, max_pixels))


def batch_from_bytes(contents, max_pixels=MAX_PIXELS):
    """Encoded images [N] -> uint8 [N, 28, 28], one image at a time (each may have its own size)."""
    # At most 4 images decoded at once: the memory of a batch of large photos stays bounded.
    return tf.map_fn(lambda c: from_bytes(c, max_pixels), contents, parallel_iterations=4,
                     fn_output_signature=tf.TensorSpec([SIZE, SIZE], tf.uint8))


def batch_from_arrays(images):
    """uint8 [N, 28, 28, C] (C = 3 or 4) -> uint8 [N, 28, 28] through the rule, image by image."""
    return tf.map_fn(lambda image: to_fashion_mnist(to_rgba(image)), images,
                     fn_output_signature=tf.TensorSpec([SIZE, SIZE], tf.uint8))
