"""Any image -> a Fashion-MNIST image (28x28 uint8, a light garment on black), in TensorFlow ops.

One implementation, used wherever an image enters a model: the SavedModel's `serving_bytes` signature (encoded
files), `serving_default` given colour arrays, and the batch prediction job (`trainer.predict`).

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
6. 8-bit grey (ITU-R 601 luminance, as `tf.image.rgb_to_grayscale`).

Where this differs from the paper, and why:

- Resizing averages the pixels each output pixel covers (area interpolation) instead of subsampling (keeping
  every k-th row and column): on the rendered photos of bench/photos.py subsampling cost accuracy (the figures
  are in docs/benchmarks.md). Images over 1024 pixels on a side are first area-reduced to 1024, which bounds the
  memory of trimming.
- "Negate" is relative to the background: a pixel as bright as the background (the corners' mean luminance)
  becomes 0 and the darkest possible one 255, so an off-white or grey backdrop becomes black too. On a white
  background this is exactly the paper's negation. A *dark* background (a light garment photographed on black)
  is kept the right way round instead of being negated into a dark-on-white image.
- Transparency (PNG, WebP, GIF with alpha, RGBA arrays) is composited over white first: a cut-out product
  image becomes a product on a white background, which step 1 trims away.

Decoding: PNG, JPEG, GIF (its first frame), BMP and WebP. The header's width and height are read before
anything is decoded, and an image over `MAX_PIXELS` is refused unread (a small file can declare a picture of
billions of pixels: a decompression bomb).
"""

import tensorflow as tf

SIZE = 28
FUZZ = 0.05            # trimming: a pixel within 5 % (RMS over R, G, B) of a corner's colour is background
DARK_BELOW = 128       # the rule: a 28x28 image whose outer ring has a median luminance below this is as is
MAX_SIDE = 1024        # larger images are area-reduced to this before trimming (memory of the trim)
MAX_PIXELS = 50_000_000  # refused before decoding: 50 megapixels is more than any camera photo of a product
SHARPEN_AMOUNT = 1.0
RESIZE_METHOD = "area"   # the paper subsamples ("nearest"); see the module docstring
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP")

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of tf.image.rgb_to_grayscale


# --------------------------------------------------------------------------------------------------- headers

def _bytes_at(contents, offset, length):
    return tf.cast(tf.io.decode_raw(tf.strings.substr(contents, offset, length), tf.uint8), tf.int64)


def _uint(contents, offset, length, little_endian):
    b = _bytes_at(contents, offset, length)
    weights = tf.constant([256 ** i for i in range(length)] if little_endian
                          else [256 ** i for i in reversed(range(length))], tf.int64)
    return tf.reduce_sum(b * weights)


def header(contents):
    """(format index into FORMATS or -1, height, width) from an encoded image's header, without decoding it.

    Unknown formats, and files too short for their header, give (-1, 0, 0). A JPEG's size comes from
    `tf.io.extract_jpeg_shape`, which reads its markers only (and fails on a header that is not JPEG's).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    length = tf.strings.length(contents)
    padded = contents + b"\0" * 16  # so that reading the magic bytes never runs past the end

    def starts(prefix, offset=0):
        return tf.equal(tf.strings.substr(padded, offset, len(prefix)), prefix)

    def png():
        return tf.constant(0, tf.int64), _uint(contents, 20, 4, False), _uint(contents, 16, 4, False)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
        return tf.constant(1, tf.int64), shape[0], shape[1]

    def gif():
        return tf.constant(2, tf.int64), _uint(contents, 8, 2, True), _uint(contents, 6, 2, True)

    def bmp():
        height = _uint(contents, 22, 4, True)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)  # negative: rows stored top-down
        return tf.constant(3, tf.int64), height, _uint(contents, 18, 4, True)

    def webp():
        chunk = tf.strings.substr(contents, 12, 4)

        def lossy():  # "VP8 ": 14-bit width and height after the frame tag and start code
            return _uint(contents, 28, 2, True) % 16384, _uint(contents, 26, 2, True) % 16384

        def lossless():  # "VP8L": 14 bits each, minus one, packed after the signature byte
            bits = _uint(contents, 21, 4, True)
            return (bits // 16384) % 16384 + 1, bits % 16384 + 1

        def extended():  # "VP8X": the canvas, 24 bits each, minus one
            return _uint(contents, 27, 3, True) + 1, _uint(contents, 24, 3, True) + 1

        height, width = tf.case([(tf.equal(chunk, "VP8 "), lossy), (tf.equal(chunk, "VP8L"), lossless),
                                 (tf.equal(chunk, "VP8X"), extended)],
                                default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))
        kind = tf.where(height > 0, tf.constant(4, tf.int64), tf.constant(-1, tf.int64))
        return kind, height, width

    def unknown():
        return tf.constant(-1, tf.int64), tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    return tf.case([
        (starts(b"\x89PNG\r\n\x1a\n") & (length >= 24), png),
        (starts(b"\xff\xd8") & (length >= 4), jpeg),
        ((starts(b"GIF87a") | starts(b"GIF89a")) & (length >= 10), gif),
        (starts(b"BM") & (length >= 26), bmp),
        (starts(b"RIFF") & starts(b"WEBP", 8) & (length >= 30), webp),
    ], default=unknown, exclusive=True)


# ---------------------------------------------------------------------------------------------- decoding

def decode(contents, max_pixels=MAX_PIXELS):
    """An encoded image -> uint8 [H, W, 4] (RGBA), refusing an unknown format or an oversized one *before*
    decoding. Errors are `tf.errors.InvalidArgumentError`s whose message says what was wrong."""
    kind, height, width = header(contents)
    checks = [
        tf.debugging.assert_greater_equal(
            kind, tf.constant(0, tf.int64),
            message="not an image this model reads (PNG, JPEG, GIF, BMP or WebP), or its header is cut short"),
        tf.debugging.assert_less_equal(
            height * width, tf.constant(max_pixels, tf.int64),
            message=f"refused before decoding: the header declares more than {max_pixels:,} pixels "
                    "(a decompression bomb?)"),
    ]
    with tf.control_dependencies(checks):
        contents = tf.identity(contents)
    image = tf.io.decode_image(contents, channels=0, expand_animations=False, dtype=tf.uint8)
    return to_rgba(image)


def to_rgba(image):
    """uint8 [H, W, C] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> uint8 [H, W, 4]."""
    image = tf.convert_to_tensor(image, tf.uint8)
    channels = tf.shape(image)[-1]
    opaque = tf.fill(tf.concat([tf.shape(image)[:-1], [1]], 0), tf.constant(255, tf.uint8))
    tf.debugging.assert_less_equal(channels, 4, message="an image has 1, 2, 3 or 4 channels")

    def branch(c):
        def build():
            if c == 1:
                return tf.concat([image[..., :1]] * 3 + [opaque], -1)
            if c == 2:
                return tf.concat([image[..., :1]] * 3 + [image[..., 1:2]], -1)
            if c == 3:
                return tf.concat([image[..., :3], opaque], -1)
            return image[..., :4]
        return build

    return tf.switch_case(channels - 1, [branch(c) for c in (1, 2, 3, 4)])


# ------------------------------------------------------------------------------------------- the rule

def luminance(rgb):
    """float [..., 3] -> float [...], ITU-R BT.601 (tf.image.rgb_to_grayscale's weights)."""
    return tf.tensordot(rgb, tf.constant(_LUMA, rgb.dtype), axes=[[-1], [0]])


def over_white(rgba):
    """uint8 [H, W, 4] -> float32 RGB [H, W, 3] in 0-255, transparency composited over white."""
    rgba = tf.cast(rgba, tf.float32)
    alpha = rgba[..., 3:] / 255.0
    return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)


def is_fashion_mnist_like(gray):
    """True for a 28x28 image (float luminance [H, W]) whose outer ring of pixels has a median below 128."""
    shape = tf.shape(gray)

    def dark_ring():
        ring = tf.concat([gray[0, :], gray[-1, :], gray[1:-1, 0], gray[1:-1, -1]], 0)
        return _median(ring) < DARK_BELOW

    return tf.cond(tf.reduce_all(tf.equal(shape, [SIZE, SIZE])), dark_ring, lambda: tf.constant(False))


def _median(values):
    ordered = tf.sort(values)
    n = tf.shape(ordered)[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0


def to_fashion_mnist(rgba, resize_method=None, sharpen=None):
    """uint8 RGBA [H, W, 4] -> uint8 [28, 28]: as is when Fashion-MNIST-like, else converted (module docstring).

    `resize_method` and `sharpen` (amount) override the defaults, for bench/photos.py's comparison.
    """
    rgb = over_white(rgba)
    gray = luminance(rgb)
    return tf.cond(is_fashion_mnist_like(gray),
                   lambda: _to_uint8(gray),
                   lambda: convert(rgb, resize_method or RESIZE_METHOD,
                                   SHARPEN_AMOUNT if sharpen is None else sharpen))


def convert(rgb, resize_method=RESIZE_METHOD, sharpen=SHARPEN_AMOUNT):
    """Fashion-MNIST's conversion of a photo (float RGB [H, W, 3], 0-255) -> uint8 [28, 28]."""
    rgb = _limit_size(rgb)
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]

    # 1. Trim: the bounding box of the pixels that differ from every corner's colour by more than FUZZ.
    corners = tf.stack([rgb[0, 0], rgb[0, width - 1], rgb[height - 1, 0], rgb[height - 1, width - 1]])
    distance = tf.sqrt(tf.reduce_mean(tf.square(rgb[:, :, None, :] - corners[None, None]), -1))
    foreground = tf.reduce_min(distance, -1) > FUZZ * 255.0
    rows = tf.where(tf.reduce_any(foreground, 1))[:, 0]
    cols = tf.where(tf.reduce_any(foreground, 0))[:, 0]
    empty = tf.equal(tf.size(rows), 0)  # a blank image: keep all of it
    top = tf.cond(empty, lambda: 0, lambda: tf.cast(rows[0], tf.int32))
    bottom = tf.cond(empty, lambda: height, lambda: tf.cast(rows[-1], tf.int32) + 1)
    left = tf.cond(empty, lambda: 0, lambda: tf.cast(cols[0], tf.int32))
    right = tf.cond(empty, lambda: width, lambda: tf.cast(cols[-1], tf.int32) + 1)
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


def _limit_size(rgb):
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]
    longest = tf.maximum(height, width)

    def reduce():
        scale = MAX_SIDE / tf.cast(longest, tf.float32)
        size = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32))
        return tf.image.resize(rgb, size, method="area")

    return tf.cond(longest > MAX_SIDE, reduce, lambda: rgb)


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
    return tf.map_fn(lambda c: from_bytes(c, max_pixels), contents,
                     fn_output_signature=tf.TensorSpec([SIZE, SIZE], tf.uint8))


def batch_from_arrays(images):
    """uint8 [N, 28, 28, C] (C = 3 or 4) -> uint8 [N, 28, 28] through the rule, image by image."""
    return tf.map_fn(lambda image: to_fashion_mnist(to_rgba(image)), images,
                     fn_output_signature=tf.TensorSpec([SIZE, SIZE], tf.uint8))
