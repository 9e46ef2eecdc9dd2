"""Safe decoding: every odd image either becomes correct RGB or a BadItem with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from precompute.errors import BadItem
from precompute.images import fit_within, load_rgb, save_png, to_rgb
from tests.precompute.sources import samples


def reason_of(data, **kwargs) -> str:
    with pytest.raises(BadItem) as caught:
        load_rgb(data, **kwargs)
    assert caught.value.detail, "every failure carries a human detail"
    return caught.value.reason


def test_good_png_from_bytes_and_path(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(samples.solid_png((200, 10, 20)))
    for source in (path, str(path), path.read_bytes()):
        image = load_rgb(source)
        assert image.mode == "RGB" and image.size == (8, 8)
        assert image.getpixel((3, 3)) == (200, 10, 20)


def test_file_problems(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(300))
    assert reason_of(tmp_path / "absent.png") == "missing-file"
    assert reason_of(tmp_path) == "missing-file"  # a folder is not an image file
    assert reason_of(tmp_path / "empty.png") == "empty-file"
    assert reason_of(b"") == "empty-file"
    assert reason_of(tmp_path / "noise.png") == "undecodable"


def test_truncated_streams():
    jpeg = samples.noisy_jpeg()
    png = samples.encode(Image.open(io.BytesIO(jpeg)))
    assert reason_of(jpeg[: len(jpeg) // 2]) == "truncated"
    assert reason_of(png[: len(png) // 2]) == "truncated"


def test_header_bomb_refused_before_decoding(monkeypatch):
    # Our limit holds even with PIL's global guard switched off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert reason_of(samples.header_bomb_png(20_000, 20_000)) == "too-large"
    assert reason_of(samples.header_bomb_png(1_000, 1_000), max_pixels=999_999) == "too-large"
    assert reason_of(samples.solid_png((0, 0, 0), size=(10, 10)), max_pixels=99) == "too-large"


def test_pil_bomb_error_is_too_large():
    # 20000^2 is over twice PIL's default limit: PIL raises before our check runs.
    assert reason_of(samples.header_bomb_png(20_000, 20_000), max_pixels=10**12) == "too-large"


def test_cmyk_becomes_rgb():
    red = np.asarray(load_rgb(samples.cmyk_red_jpeg()), dtype=int)
    assert np.abs(red - [255, 0, 0]).max() <= 12


def test_16_bit_grey_scaled_not_clipped():
    grey = load_rgb(samples.gray16_png(32768))
    assert abs(grey.getpixel((0, 0))[0] - 128) <= 1
    ramp = np.asarray(load_rgb(samples.gray16_ramp_png()))[0, :, 0]
    assert ramp[0] == 0 and abs(int(ramp[1]) - 128) <= 1 and ramp[2] == 255


def test_palette_transparency_composited_on_white():
    image = load_rgb(samples.palette_png_with_transparency())
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (255, 0, 0)


def test_rgba_composited_on_white():
    image = load_rgb(samples.rgba_png())
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (0, 0, 255)
    assert all(abs(channel - 127) <= 1 for channel in image.getpixel((2, 0)))


def test_exif_orientation_applied():
    image = load_rgb(samples.exif_rotated_jpeg())
    assert image.size == (2, 4)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("1", (2, 2), 1), (255, 255, 255)),
        (Image.new("L", (2, 2), 77), (77, 77, 77)),
        (Image.new("LA", (2, 2), (0, 0)), (255, 255, 255)),
        (Image.new("I", (2, 2), 65535), (255, 255, 255)),
        (Image.new("I", (2, 2), 257 * 10), (10, 10, 10)),
        (Image.new("F", (2, 2), 0.5), (128, 128, 128)),
        (Image.new("F", (2, 2), 200.0), (200, 200, 200)),
        (Image.new("YCbCr", (2, 2), (255, 128, 128)), (255, 255, 255)),
    ],
    ids=["1", "L", "LA", "I-max", "I-16bit", "F-unit", "F-byte", "YCbCr"],
)
def test_to_rgb_modes(image, expected):
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    assert all(abs(a - b) <= 1 for a, b in zip(converted.getpixel((0, 0)), expected))


def test_float_out_of_range_is_stretched():
    values = np.array([[-5.0, 0.0, 5.0]], dtype=np.float32)
    row = np.asarray(to_rgb(Image.fromarray(values)))[0, :, 0]
    assert list(row) == [0, 128, 255]


def test_premultiplied_la():
    assert to_rgb(Image.new("La", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


class _ExoticImage:
    """Stands in for an image whose mode PIL cannot convert (no such mode is creatable)."""

    mode = "BGR;24"

    def convert(self, mode):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")


def test_unsupported_mode():
    with pytest.raises(BadItem) as caught:
        to_rgb(_ExoticImage())
    assert caught.value.reason == "unsupported-mode"


def test_fit_within_downscales_keeping_aspect_and_never_upscales():
    wide = Image.new("RGB", (400, 100))
    assert fit_within(wide, 100).size == (100, 25)
    small = Image.new("RGB", (40, 10))
    assert fit_within(small, 100) is small
    with pytest.raises(ValueError):
        fit_within(small, 0)


def test_save_png_is_atomic_and_round_trips(tmp_path):
    target = tmp_path / "deep" / "out.png"
    save_png(Image.new("RGB", (3, 3), (9, 8, 7)), target)
    assert load_rgb(target).getpixel((1, 1)) == (9, 8, 7)
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]
