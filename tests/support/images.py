"""Test images as files: encoded by PIL, rendered as product photos, or a decompression bomb's bare header."""

import io
import struct
import zlib

import numpy as np


def encode(array, fmt="PNG", **options):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width, height):
    """A PNG signature and IHDR declaring width x height, and nothing else: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def product_photo(image, factor=6, canvas=(300, 250), at=(20, 50), quality=90, background=255):
    """A dark-on-white (or light-on-dark) enlarged copy of a test image, off-centre on a canvas, JPEG."""
    from PIL import Image
    side = 28 * factor
    garment = 255 - image if background > 127 else image
    big = np.asarray(Image.fromarray(garment).resize((side, side), Image.BICUBIC))
    page = np.full(canvas, background, np.uint8)
    page[at[0]:at[0] + side, at[1]:at[1] + side] = big
    if background > 127:
        page[at[0]:at[0] + side, at[1]:at[1] + side] = np.minimum(big, 255)
    return encode(np.repeat(page[..., None], 3, -1), "JPEG", quality=quality)


def write_image_folder(root):
    """12 test images as PNGs in `root` (two in a subfolder), plus broken files and a file that is not an image."""
    from support.model import sample_images
    images, _ = sample_images()
    (root / "sub").mkdir()
    for i in range(10):
        (root / f"{i:02d}.png").write_bytes(encode(images[i]))
    (root / "sub" / "10.png").write_bytes(encode(images[10]))
    (root / "sub" / "11.jpg").write_bytes(encode(images[11], "JPEG", quality=100))
    (root / "sub" / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (root / "sub" / "empty.png").write_bytes(b"")
    (root / "sub" / "not-an-image.png").write_bytes(b"just some text, not a picture")
    (root / "sub" / "truncated.png").write_bytes(encode(images[0])[:120])
    (root / "notes.txt").write_text("not an image: folders only yield image files")
    return root
