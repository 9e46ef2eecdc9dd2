"""Tiny image files built in code for the source and decoding tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid_png(rgb: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    return encode(Image.new("RGB", size, rgb))


def noisy_jpeg(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def header_bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares a ``width`` x ``height`` canvas.

    The IDAT holds one compressed scanline only: a decoder that trusted the header
    would allocate the whole canvas before noticing.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def cmyk_red_jpeg() -> bytes:
    return encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95)


def gray16_png(value: int, size: tuple[int, int] = (4, 4)) -> bytes:
    image = Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16))
    return encode(image)


def gray16_ramp_png() -> bytes:
    """A 3x1 16-bit image: 0, 32768, 65535."""
    return encode(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)))


def palette_png_with_transparency() -> bytes:
    """A 2x1 palette PNG: pixel 0 uses the transparent index, pixel 1 is opaque red."""
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    return encode(image, transparency=0)


def rgba_png() -> bytes:
    """A 3x1 RGBA PNG: transparent black, opaque blue, half-transparent black."""
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    return encode(image)


def exif_rotated_jpeg() -> bytes:
    """A 4x2 JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (4, 2), (0, 128, 0)), "JPEG", exif=exif.tobytes())
