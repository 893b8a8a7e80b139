"""Encoded images and pixel lists -> Fashion-MNIST's uint8 [28, 28], each input checked before it is decoded.

The same rule and conversion as the SavedModel's `serving_bytes` (`trainer.serving.photo`): the header is read
first (an image declaring more than --max_pixels pixels is refused before decoding: a decompression bomb), then
decoded and converted. What is wrong with one input becomes that input's error; the batch goes on.
"""

from trainer.serving import frames
from trainer.serving.inputs import InputError

MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}


_preprocessors = {}


def preprocessor(max_pixels):
    """One Preprocessor per limit and process: its tf.functions are traced once."""
    if max_pixels not in _preprocessors:
        _preprocessors[max_pixels] = Preprocessor(max_pixels)
    return _preprocessors[max_pixels]


class Preprocessor:
    """Encoded bytes or pixel lists -> uint8 [28, 28], through trainer.serving.photo (the serving_bytes code path).

    A batch at a time: the headers of all its files in one call, then every file that passed decoded and
    converted in one call; only when that call fails (a corrupt file among them) is each decoded on its own, to
    find which one. Python-side dispatch, not the decoding, is what one call per image would cost.
    """

    def __init__(self, max_pixels):
        import tensorflow as tf
        from trainer.serving import photo
        self.tf, self.photo, self.max_pixels = tf, photo, max_pixels
        strings = tf.TensorSpec([None], tf.string)
        # Traced once, here, in one thread.
        def trace(function, spec):
            return tf.function(function, autograph=False).get_concrete_function(spec)

        self._headers = trace(lambda c: tf.map_fn(photo.header, c, fn_output_signature=(tf.int64,) * 3), strings)
        self._from_bytes = trace(lambda c: photo.batch_from_bytes(c, max_pixels), strings)
        self._from_colour = trace(lambda a: photo.to_fashion_mnist(photo.to_rgba(a)),
                                  tf.TensorSpec([None, None, None], tf.uint8))

    def batch(self, loaded):
        """[("bytes", b) | ("array", pixels) | InputError] -> [(uint8 [28, 28] or None, InputError or None)]."""
        results = [None] * len(loaded)
        encoded = []
        for i, value in enumerate(loaded):
            if isinstance(value, InputError):
                results[i] = (None, value)
            elif value[0] == "array":
                results[i] = self._guard(self.array, value[1])
            elif not value[1]:
                results[i] = (None, InputError("empty file"))
            else:
                encoded.append(i)
        if encoded:
            readable = []
            for i, header in zip(encoded, self._header_rows([loaded[i][1] for i in encoded])):
                if header is None:
                    results[i] = (None, InputError("a JPEG whose markers cannot be read (truncated or corrupt)"))
                    continue
                problem = self._check_header(loaded[i][1], *header)
                if problem:
                    results[i] = (None, problem)
                else:
                    readable.append(i)
            for i, image in zip(readable, self._decode(readable, loaded)):
                results[i] = image
        return results

    def _header_rows(self, contents):
        """[(kind, height, width) or None] of each file: one call for all, each on its own only when a JPEG's
        markers fail that call (hypothesis found `ff d8 00 00`, which failed the whole batch)."""
        try:
            kinds, heights, widths = (v.numpy() for v in self._headers(self.tf.constant(contents)))
        except self.tf.errors.InvalidArgumentError:
            if len(contents) == 1:
                return [None]
            return [row for one in contents for row in self._header_rows([one])]
        return [(int(k), int(h), int(w)) for k, h, w in zip(kinds, heights, widths)]

    def _check_header(self, contents, kind, height, width):
        if kind < 0:
            known = next((name for magic, name in MAGIC.items() if contents.startswith(magic)), None)
            if known and len(contents) < 64:
                return InputError(f"truncated {known}: {len(contents)} bytes, not even a whole header")
            return InputError("not an image this model reads (PNG, JPEG, GIF, BMP or WebP)")
        name = self.photo.FORMATS[kind]
        if height * width > self.max_pixels:
            return InputError(f"refused before decoding: the {name} header declares {width:,} x {height:,} = "
                              f"{width * height:,} pixels, over the limit of {self.max_pixels:,} (--max_pixels); "
                              "a decompression bomb?")
        if height == 0 or width == 0:
            return InputError(f"the {name} header declares an empty image ({width} x {height})")
        if frames.animated_webp(contents):
            return InputError("an animated WebP: refused unread (TensorFlow's decoder corrupts memory on them)")
        held = frames.pixels(contents)
        if held is not None and held > self.max_pixels:
            return InputError(f"refused before decoding: the {name}'s frames would hold {held:,} pixels, over the "
                              f"limit of {self.max_pixels:,} (--max_pixels); a decompression bomb?")
        return None

    def _decode(self, indices, loaded):
        tf = self.tf
        if not indices:
            return []
        try:
            images = self._from_bytes(tf.constant([loaded[i][1] for i in indices])).numpy()
            return [(image, None) for image in images]
        except tf.errors.InvalidArgumentError:
            if len(indices) == 1:
                try:
                    image = self._from_bytes(tf.constant([loaded[indices[0]][1]])).numpy()[0]
                    return [(image, None)]
                except tf.errors.InvalidArgumentError as error:
                    kind = int(self._headers(tf.constant([loaded[indices[0]][1]]))[0].numpy()[0])
                    return [(None, InputError(f"cannot decode this {self.photo.FORMATS[kind]} (truncated or "
                                              f"corrupt?): {tf_message(error)}"))]
            half = len(indices) // 2  # find the bad ones by halving
            return self._decode(indices[:half], loaded) + self._decode(indices[half:], loaded)

    @staticmethod
    def _guard(function, value):
        try:
            return function(value), None
        except InputError as error:
            return None, error

    def array(self, pixels):
        import numpy as np
        tf = self.tf
        try:
            array = np.asarray(pixels)
        except ValueError:
            raise InputError("pixels are not a rectangular array") from None
        if array.dtype.kind not in "iuf" or array.size == 0 or array.min() < 0 or array.max() > 255 \
                or np.any(array != np.round(array)):
            raise InputError("pixels must be whole numbers from 0 to 255")
        if array.shape not in ((28, 28), (28, 28, 1), (28, 28, 3), (28, 28, 4)):
            raise InputError(f"pixels must be 28x28, 28x28x1, 28x28x3 (RGB) or 28x28x4 (RGBA); got "
                             f"{'x'.join(map(str, array.shape))}: send other images as image_bytes")
        array = array.astype(np.uint8)
        if array.ndim == 2 or array.shape[-1] == 1:  # grey: Fashion-MNIST's own pixels, as serving_default
            return array.reshape(28, 28)
        return self._from_colour(tf.constant(array)).numpy()


def tf_message(error):
    """The useful line of a TensorFlow op error (not its graph-node decorations)."""
    import re
    text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\]", "", str(getattr(error, "message", error)))
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if line.startswith("assertion failed:"):
            return line[len("assertion failed:"):].strip().strip("[]").split("]")[0]
    useful = [line for line in lines if line and not line.startswith(("[[", "Detected at", "File ", "Graph execution"))
              and "{{" not in line]
    return (useful[-1] if useful else lines[0] if lines else "unknown error")[:300]


