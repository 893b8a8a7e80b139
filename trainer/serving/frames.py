"""The pixels an encoded image makes its decoder allocate, over every frame, read from its blocks before decoding.

photo.header reads the one size a format's header declares: a GIF's logical screen, a WebP's canvas. An
animation's frames may be larger than that (a GIF frame of 65535 x 65535 behind a 16 x 16 screen, in a file far
under --max_bytes), and there may be many of them; giflib holds every frame's raster while TensorFlow decodes
one. So fmnist-predict walks the blocks (GIF image descriptors, APNG fcTL chunks, WebP ANMF chunks) and counts
what decoding would hold: each frame's pixels, at least a canvas each. Walking touches only the block
headers (a few per frame; a GIF's data sub-blocks are skipped 255 bytes at a time).
"""


def pixels(data):
    """The pixels decoding `data` would hold over all its frames; None for a format without frames here."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _le(data, at, length):
    return int.from_bytes(data[at:at + length], "little")


def _be(data, at, length):
    return int.from_bytes(data[at:at + length], "big")


def _gif(data):
    screen = _le(data, 6, 2) * _le(data, 8, 2)
    total, at = 0, 13
    if len(data) > 10 and data[10] & 0x80:  # a global colour table
        at += 3 * (2 << (data[10] & 7))
    while at < len(data):
        block = data[at]
        if block == 0x2C:  # an image descriptor: left, top, width, height, flags
            total += max(_le(data, at + 5, 2) * _le(data, at + 7, 2), screen)
            flags = data[at + 9] if at + 9 < len(data) else 0
            at += 10 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0) + 1  # its colour table, the LZW code size
            at = _skip_sub_blocks(data, at)
        elif block == 0x21:  # an extension: its label, then sub-blocks
            at = _skip_sub_blocks(data, at + 2)
        else:  # the trailer, or bytes the decoder stops at too
            break
    return max(total, screen)


def _skip_sub_blocks(data, at):
    while at < len(data):
        size = data[at]
        at += 1 + size
        if size == 0:
            break
    return at


def _png(data):
    """The IHDR image, or the APNG frames' (fcTL) sum. Chunks after the first IDAT are walked only for an APNG."""
    image, total, at, animated = 0, 0, 8, False
    while at + 8 <= len(data):
        length, kind = _be(data, at, 4), data[at + 4:at + 8]
        body = at + 8
        if kind == b"IHDR":
            image = _be(data, body, 4) * _be(data, body + 4, 4)
        elif kind == b"acTL":
            animated = True
        elif kind == b"fcTL":
            total += _be(data, body + 4, 4) * _be(data, body + 8, 4)
        elif kind == b"IEND" or (kind == b"IDAT" and not animated):
            break
        at = body + length + 4  # data, CRC
    return max(image, total)


def _webp(data):
    """The canvas (VP8X) or the one image; for an animation (ANMF chunks), each frame at least a canvas."""
    total, canvas, at = 0, 0, 12
    while at + 8 <= len(data):
        kind, length = data[at:at + 4], _le(data, at + 4, 4)
        body = at + 8
        if kind == b"VP8X":
            canvas = (_le(data, body + 4, 3) + 1) * (_le(data, body + 7, 3) + 1)
        elif kind == b"ANMF":
            total += max((_le(data, body + 6, 3) + 1) * (_le(data, body + 9, 3) + 1), canvas)
        elif kind == b"VP8L" and not canvas:
            bits = _le(data, body + 1, 4)
            total += ((bits & 0x3FFF) + 1) * (((bits >> 14) & 0x3FFF) + 1)
        elif kind == b"VP8 " and not canvas:
            total += (_le(data, body + 6, 2) & 0x3FFF) * (_le(data, body + 8, 2) & 0x3FFF)
        at = body + length + (length & 1)  # chunks are padded to an even length
    return max(total, canvas)


def animated_webp(data):
    """Whether `data` is an animated WebP (VP8X's animation flag): TensorFlow 2.21's decoder corrupted the heap
    on a 4-frame 300 x 200 one (glibc: malloc assertion failure, the process aborted), so it is never decoded."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X" and len(data) > 20 \
        and bool(data[20] & 0x02)


def gif_pixels_op(contents):
    """_gif in TensorFlow ops, for the SavedModel's serving_bytes: int64 pixels a GIF's frames would hold (0 for
    any other format). A while loop of one step per block or 255-byte sub-block: about 4,000 steps a MB."""
    import tensorflow as tf

    def walk():
        data = tf.cast(tf.io.decode_raw(contents + b"\0" * 16, tf.uint8), tf.int64)
        end = tf.cast(tf.strings.length(contents), tf.int64)
        at = lambda i, n=1: tf.reduce_sum(data[i:i + n] * tf.constant([1, 256][:n], tf.int64))  # noqa: E731
        screen = at(6, 2) * at(8, 2)
        table = lambda flags: tf.where(flags >= 128, 3 * tf.bitwise.left_shift(  # noqa: E731
            tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7)), tf.constant(0, tf.int64))
        start = 13 + table(at(10))

        def step(i, total, in_blocks):
            block = at(i)
            descriptor = tf.logical_and(tf.logical_not(in_blocks), tf.equal(block, 0x2C))
            extension = tf.logical_and(tf.logical_not(in_blocks), tf.equal(block, 0x21))
            frame = tf.maximum(at(i + 5, 2) * at(i + 7, 2), screen)
            after_descriptor = i + 10 + table(at(i + 9)) + 1
            next_i = tf.where(in_blocks, i + 1 + block, tf.where(descriptor, after_descriptor,
                                                                 tf.where(extension, i + 2, end)))
            return (next_i, total + tf.where(descriptor, frame, tf.constant(0, tf.int64)),
                    tf.where(in_blocks, tf.not_equal(block, 0), descriptor | extension))

        _, total, _ = tf.while_loop(lambda i, total, in_blocks: i < end, step,
                                    (start, tf.constant(0, tf.int64), tf.constant(False)),
                                    maximum_iterations=tf.cast(end, tf.int32) + 1)
        return tf.maximum(total, screen)

    is_gif = tf.logical_or(tf.equal(tf.strings.substr(contents, 0, 6), b"GIF89a"),
                           tf.equal(tf.strings.substr(contents, 0, 6), b"GIF87a"))
    return tf.cond(is_gif, walk, lambda: tf.constant(0, tf.int64))
