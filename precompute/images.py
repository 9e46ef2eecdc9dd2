"""Safe image decoding: every real image enters the pipeline through ``load_rgb``.

Real data is messy (CMYK scans, 16-bit medical greys, palette GIFs with a transparent
index, phone photos rotated by EXIF, truncated downloads, decompression bombs). This
module turns any of them into a fully loaded 8-bit RGB ``PIL.Image`` or raises
``BadItem`` with a stable reason code, so a source can skip the item and the manifest
can count skips by reason:

- ``missing-file``: the path does not exist (or is not a file).
- ``empty-file``: zero bytes.
- ``undecodable``: not an image PIL can identify, or a corrupt stream.
- ``truncated``: the image stream ends early.
- ``too-large``: the header declares more than ``max_pixels`` pixels.
- ``unsupported-mode``: a pixel mode we cannot map to RGB.
"""

from __future__ import annotations

import io
import logging
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from precompute.errors import BadItem
from precompute.fileio import atomic_path

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000

# Modes PIL converts to RGB directly and correctly (no alpha, 8 bits per channel).
_DIRECT_MODES = {"1", "L", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"}
# Modes with an alpha channel (or a palette that may hold one): composited on white.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA", "P"}
# Integer modes wider than 8 bits.
_WIDE_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}

# What PIL and its plugins raise for broken streams; a bad file must never escape as
# anything but BadItem.
_DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, IndexError, TypeError, KeyError, struct.error, zlib.error)

# Silencing PIL's DecompressionBombWarning needs a warnings filter, which is
# process-wide state; the lock keeps concurrent downloader threads from saving and
# restoring each other's filters out of order (only the header parse runs under it).
_open_lock = threading.Lock()


def load_rgb(data: bytes | str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` (encoded bytes or a file path) into a fully loaded RGB image.

    The pixel count is checked from the header before any pixel is decoded, so a
    small file that declares a huge canvas is refused cheaply as ``too-large``. EXIF
    orientation is applied, then the mode is mapped to RGB (see ``to_rgb``).

    Raises ``BadItem`` with one of the reason codes listed in the module docstring.
    """
    encoded = _read_encoded(data)
    label = str(data) if isinstance(data, (str, Path)) else f"{len(encoded)} bytes"
    return from_pil(_open_header(encoded, label), max_pixels=max_pixels, label=label)


def from_pil(image: Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS, label: str = "image") -> Image.Image:
    """Finish an opened (possibly lazy) PIL image: size check, load, EXIF orientation, RGB.

    This is the second half of ``load_rgb``, public for sources whose library already
    opened the image (``datasets`` cells holding PIL images). ``label`` names the image
    in error details.
    """
    width, height = image.size
    if width * height > max_pixels:
        raise BadItem(
            "too-large",
            f"{label}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    if width < 1 or height < 1:
        raise BadItem("undecodable", f"{label}: declares an empty {width}x{height} canvas")
    try:
        image.load()
    except _DECODE_ERRORS as err:
        # PIL reports early ends as "image file is truncated" or "Truncated File Read".
        if isinstance(err, EOFError) or "truncated" in str(err).lower():
            raise BadItem("truncated", f"{label}: {err}") from err
        raise BadItem("undecodable", f"{label}: {err}") from err
    return to_rgb(_apply_orientation(image, label))


def to_rgb(image: Image.Image) -> Image.Image:
    """Map a loaded image of any common mode to 8-bit RGB.

    - ``1``, ``L``, ``CMYK``, ``YCbCr``...: PIL's own conversion.
    - alpha modes and palettes (with or without a transparent index): composited on
      white, so a fully transparent pixel becomes white rather than black.
    - 16/32-bit integer and float greys: scaled by their value range (see
      ``_wide_to_8bit``) instead of being clipped at 255.

    Raises ``BadItem("unsupported-mode")`` for anything else.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    try:
        if mode in _DIRECT_MODES:
            return image.convert("RGB")
        if mode in _ALPHA_MODES:
            # PIL has no La -> RGBA path; un-premultiply through LA first.
            rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if mode in _WIDE_INT_MODES or mode == "F":
            return Image.fromarray(_wide_to_8bit(image)).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise BadItem("unsupported-mode", f"cannot convert mode {mode!r} to RGB: {err}") from err


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as PNG atomically: a reader never sees a half-written file.

    Through ``fileio.atomic_path``: a temp file beside the target, renamed into place
    (atomic on one filesystem). Parent folders are created.
    """
    target = Path(path)
    with atomic_path(target) as temp, open(temp, "wb") as handle:
        image.save(handle, format="PNG")
    return target


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale ``image`` so its longer side is at most ``max_side`` (LANCZOS).

    The aspect ratio is kept; an image that already fits is returned unchanged, so
    this never upscales.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    width, height = image.size
    longer = max(width, height)
    if longer <= max_side:
        return image
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


#: PIL's JPEG quality when none is given (``Image.save(path.jpg)``), what a script that saves ``.jpg`` files gets.
PIL_JPEG_QUALITY = 75


def jpeg_roundtrip(image: Image.Image, quality: int = PIL_JPEG_QUALITY) -> Image.Image:
    """``image`` encoded as a JPEG of ``quality`` and decoded again (PIL's defaults otherwise: 4:2:0 chroma).

    The blindspots paper's code reads its real and generated images back from
    ``original.jpg`` and ``ai.jpg`` files before encoding them; this reproduces that
    step in memory.
    """
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _read_encoded(data: bytes | str | Path) -> bytes:
    """Return the encoded bytes, mapping file problems to ``BadItem``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        encoded = bytes(data)
        if not encoded:
            raise BadItem("empty-file", "no bytes to decode")
        return encoded
    path = Path(data)
    if not path.is_file():
        raise BadItem("missing-file", f"{path} does not exist or is not a file")
    try:
        encoded = path.read_bytes()
    except OSError as err:
        raise BadItem("missing-file", f"{path} cannot be read: {err}") from err
    if not encoded:
        raise BadItem("empty-file", f"{path} has zero bytes")
    return encoded


def _open_header(encoded: bytes, label: str) -> Image.Image:
    """Parse only the header; pixels are decoded later, after the size check.

    Our own size check (in ``from_pil``) does not depend on PIL's global
    ``Image.MAX_IMAGE_PIXELS``, which may be disabled. PIL's warning is silenced (our
    limit decides); its hard error for enormous canvases is reported as ``too-large``.
    """
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(encoded))
    except Image.DecompressionBombError as err:
        raise BadItem("too-large", f"{label}: {err}") from err
    except UnidentifiedImageError as err:
        raise BadItem("undecodable", f"{label}: not a recognised image format") from err
    except _DECODE_ERRORS as err:
        reason = "truncated" if "truncated" in str(err).lower() else "undecodable"
        raise BadItem(reason, f"{label}: {err}") from err


def _apply_orientation(image: Image.Image, label: str) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a malformed EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:
        log.debug("ignoring malformed EXIF orientation in %s: %s", label, err)
        return image


def _wide_to_8bit(image: Image.Image) -> np.ndarray:
    """Scale a >8-bit grey image to uint8 by the range its values live in.

    Integer images whose values fit 0..65535 are treated as 16-bit (``value / 257``,
    so 65535 -> 255 and mid-grey stays mid-grey). Float images in 0..1 are scaled by
    255, in 0..255 kept, in 0..65535 divided by 257. Anything outside those ranges
    (negative or huge values) is min-max stretched, the only mapping left that keeps
    the picture visible.
    """
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def load_images(paths: list[Path], jpeg_quality: int | None = None) -> list[Image.Image]:
    """The stored images at ``paths`` as RGB, each after a JPEG round trip of ``jpeg_quality`` when one is given.

    The round trip is ``encode.jpeg_roundtrip``: the paper's code encodes its real and
    generated images from ``.jpg`` files.
    """
    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        images.append(rgb if jpeg_quality is None else jpeg_roundtrip(rgb, jpeg_quality))
    return images
