"""FolderSource: a folder full of bad input yields good items and reasoned skips, never raises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from precompute.errors import DataError
from precompute.sources.base import Item, Skip
from precompute.sources.folder import FolderSource
from tests.precompute.sources import samples


def write_jsonl(folder, records) -> None:
    lines = [record if isinstance(record, str) else json.dumps(record) for record in records]
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def bad_folder(tmp_path):
    """A folder with every kind of trouble a real image folder has."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    files = {
        "img/good.png": samples.solid_png((10, 200, 30)),
        "img/good.jpg": samples.noisy_jpeg(seed=3),
        "img/truncated.jpg": samples.noisy_jpeg(seed=4)[:600],
        "img/empty.png": b"",
        "img/noise.png": np.random.default_rng(5).bytes(256),
        "img/bomb.png": samples.header_bomb_png(20_000, 20_000),
        "img/cmyk.jpg": samples.cmyk_red_jpeg(),
        "img/grey16.png": samples.gray16_png(32768),
        "img/palette.png": samples.palette_png_with_transparency(),
        "img/rgba.png": samples.rgba_png(),
        "img/rotated.jpg": samples.exif_rotated_jpeg(),
    }
    for name, body in files.items():
        (root / name).write_bytes(body)
    (tmp_path / "x.png").write_bytes(samples.solid_png((0, 0, 0)))  # real file, but outside
    write_jsonl(
        root,
        [
            {"file": "img/good.png", "caption": "  a green square  "},
            {"file": "img/good.jpg", "caption": "noise", "id": "noise-1"},
            {"file": "img/truncated.jpg", "caption": "cut off"},
            {"file": "img/empty.png", "caption": "nothing"},
            {"file": "img/noise.png", "caption": "random bytes"},
            {"file": "img/absent.png", "caption": "never written"},
            {"file": "img/good.png", "caption": "   ", "id": "blank-caption"},
            {"file": "img/good.png", "id": "no-caption"},
            {"file": "img/good.png", "caption": 42, "id": "number-caption"},
            {"file": "img/good.jpg", "caption": "same id again", "id": "noise-1"},
            {"file": "img/bomb.png", "caption": "a huge canvas"},
            {"file": "img/cmyk.jpg", "caption": "red in CMYK"},
            {"file": "img/grey16.png", "caption": "mid grey, 16 bit"},
            {"file": "img/palette.png", "caption": "palette with a hole"},
            {"file": "img/rgba.png", "caption": "alpha"},
            {"file": "../x.png", "caption": "escapes", "id": "escape"},
            {"file": str(tmp_path / "x.png"), "caption": "absolute", "id": "absolute"},
            "this is { not json",
            "[1, 2, 3]",
            {"caption": "no file key"},
            {"file": "./img/rotated.jpg", "caption": "turned by exif"},
        ],
    )
    return root


def test_bad_folder_never_raises_and_gives_reasons(bad_folder):
    source = FolderSource(bad_folder, max_pixels=10_000_000)
    assert source.name == "folder"
    assert len(source) == 21
    results = list(source)
    assert len(results) == 21
    by_id = {result.item_id: result for result in results if not result.item_id.startswith("line")}

    expected_skips = {
        "img/truncated": "truncated",
        "img/empty": "empty-file",
        "img/noise": "undecodable",
        "img/absent": "missing-file",
        "blank-caption": "empty-caption",
        "no-caption": "empty-caption",
        "number-caption": "empty-caption",
        "img/bomb": "too-large",
        "escape": "outside-folder",
        "absolute": "outside-folder",
    }
    for item_id, reason in expected_skips.items():
        skip = by_id[item_id]
        assert isinstance(skip, Skip), item_id
        assert skip.reason == reason, (item_id, skip)
        assert skip.detail, item_id

    # The duplicate is the tenth line; its id stays that of the first.
    duplicate = results[9]
    assert isinstance(duplicate, Skip) and duplicate.reason == "duplicate-id" and duplicate.item_id == "noise-1"
    line_skips = [r for r in results if r.item_id.startswith("line")]
    assert [(s.item_id, s.reason) for s in line_skips] == [
        ("line0000018", "bad-line"),
        ("line0000019", "bad-line"),
        ("line0000020", "bad-line"),
    ]

    items = {r.item_id: r for r in results if isinstance(r, Item)}
    assert set(items) == {
        "img/good", "noise-1", "img/cmyk", "img/grey16", "img/palette", "img/rgba", "img/rotated",
    }
    assert all(item.image.mode == "RGB" for item in items.values())
    assert items["img/good"].caption == "a green square"
    assert items["img/good"].image.getpixel((0, 0)) == (10, 200, 30)
    assert items["img/good"].meta["file"] == "img/good.png"
    red = np.asarray(items["img/cmyk"].image, dtype=int)
    assert np.abs(red - [255, 0, 0]).max() <= 12
    assert abs(items["img/grey16"].image.getpixel((0, 0))[0] - 128) <= 1
    assert items["img/palette"].image.getpixel((0, 0)) == (255, 255, 255)
    assert items["img/palette"].image.getpixel((1, 0)) == (255, 0, 0)
    assert items["img/rgba"].image.getpixel((0, 0)) == (255, 255, 255)
    assert items["img/rotated"].image.size == (2, 4)
    assert items["img/rotated"].meta["file"] == "img/rotated.jpg"


def test_order_is_file_order_and_repeatable(bad_folder):
    source = FolderSource(bad_folder, max_pixels=10_000_000)
    first = [(r.item_id, type(r).__name__) for r in source]
    second = [(r.item_id, type(r).__name__) for r in source]
    assert first == second
    assert first[0] == ("img/good", "Item")


def test_limit_caps_rows(bad_folder):
    source = FolderSource(bad_folder, limit=3)
    assert len(source) == 3
    assert [r.item_id for r in source] == ["img/good", "noise-1", "img/truncated"]


def test_csv_captions(tmp_path):
    (tmp_path / "a.png").write_bytes(samples.solid_png((1, 2, 3)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(samples.solid_png((4, 5, 6)))
    (tmp_path / "captions.csv").write_text(
        'file,caption,id\na.png,"first, with a comma",\nsub/b.png,second,b-id\nsub/b.png\nsub\\b.png,"",x\n',
        encoding="utf-8",
    )
    results = list(FolderSource(tmp_path))
    assert [(r.item_id, getattr(r, "reason", "item")) for r in results] == [
        ("a", "item"),
        ("b-id", "item"),
        ("row0000003", "bad-line"),
        ("x", "empty-caption"),
    ]
    assert results[0].caption == "first, with a comma"
    assert results[1].image.getpixel((0, 0)) == (4, 5, 6)


def test_jsonl_preferred_over_csv(tmp_path):
    (tmp_path / "a.png").write_bytes(samples.solid_png((1, 2, 3)))
    (tmp_path / "captions.csv").write_text("file,caption\na.png,from csv\n", encoding="utf-8")
    write_jsonl(tmp_path, [{"file": "a.png", "caption": "from jsonl"}])
    (item,) = FolderSource(tmp_path)
    assert item.caption == "from jsonl"


def test_folder_without_captions_file(tmp_path):
    (tmp_path / "a.png").write_bytes(samples.solid_png((1, 2, 3)))
    with pytest.raises(DataError, match=r"captions\.jsonl or captions\.csv"):
        FolderSource(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        FolderSource(tmp_path / "a.png")


def test_unreadable_captions_file(tmp_path):
    (tmp_path / "captions.jsonl").write_bytes(b'{"file": "a.png", "caption": "\xff\xfe"}\n')
    with pytest.raises(DataError, match="captions.jsonl"):
        FolderSource(tmp_path)
    (tmp_path / "captions.jsonl").unlink()
    (tmp_path / "captions.csv").write_text("path,text\na.png,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="file,caption"):
        FolderSource(tmp_path)
