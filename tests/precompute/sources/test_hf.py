"""HFSource on datasets saved locally by the test (never the hub)."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from precompute.errors import ConfigError, DataError
from precompute.sources.base import Item
from precompute.sources.hf import HFSource
from tests.precompute.sources import samples

datasets = pytest.importorskip("datasets")


def outcomes(results):
    return [(r.item_id, "item" if isinstance(r, Item) else r.reason) for r in results]


@pytest.fixture
def saved_dataset(tmp_path):
    """A saved dataset whose image column mixes PIL images, bytes, junk and holes."""
    pil_red = samples.encode(Image.new("RGB", (4, 4), (255, 0, 0)))
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "key": datasets.Value("string")}
    )
    data = datasets.Dataset.from_dict(
        {
            "image": [
                {"bytes": pil_red, "path": None},
                {"bytes": samples.rgba_png(), "path": None},
                {"bytes": b"not an image at all", "path": None},
                {"bytes": samples.solid_png((1, 2, 3)), "path": None},
                None,
                {"bytes": samples.gray16_png(65535), "path": None},
                {"bytes": samples.header_bomb_png(20_000, 20_000), "path": None},
            ],
            "text": ["red", "alpha", "junk", "  ", "no image", "white", "bomb"],
            "key": ["r", "a", "j", "blank", "none", "a", "bomb"],
        },
        features=features,
    )
    path = tmp_path / "saved"
    data.save_to_disk(str(path))
    return path


def test_saved_dataset_items_and_skips(saved_dataset):
    source = HFSource(saved_dataset, id_column="key")
    assert source.name == "hf" and len(source) == 7
    results = list(source)
    assert outcomes(results) == [
        ("r", "item"),
        ("a", "item"),
        ("j", "undecodable"),
        ("blank", "empty-caption"),
        ("none", "missing-image"),
        ("a", "duplicate-id"),
        ("bomb", "too-large"),
    ]
    assert results[0].image.mode == "RGB" and results[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert results[1].image.getpixel((0, 0)) == (255, 255, 255)
    assert all(r.detail for r in results if not isinstance(r, Item))


def test_row_ids_limit_and_dataset_dict(saved_dataset, tmp_path):
    source = HFSource(saved_dataset, limit=2)
    assert len(source) == 2
    assert outcomes(source) == [("row0000000", "item"), ("row0000001", "item")]

    splits = datasets.DatasetDict({"validation": datasets.load_from_disk(str(saved_dataset))})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert len(HFSource(tmp_path / "dict", split="validation")) == 7
    with pytest.raises(DataError, match="validation"):
        HFSource(tmp_path / "dict", split="train")


def test_streamed_pil_cells_without_features():
    # A mapped iterable dataset has no declared features: cells arrive as they were made.
    cells = [Image.new("LA", (2, 2), (0, 0)), Image.new("RGB", (50, 50)), "/no/such/file.png"]
    plain = datasets.Dataset.from_dict({"n": [0, 1, 2], "caption": ["clear", "too big", "a path"]})
    streamed = plain.to_iterable_dataset().map(lambda row: {"picture": cells[row["n"]]})
    source = HFSource(streamed, image_column="picture", caption_column="caption", max_pixels=1_000)
    with pytest.raises(TypeError, match="set limit"):
        len(source)
    results = list(source)
    assert outcomes(results) == [("row0000000", "item"), ("row0000001", "too-large"), ("row0000002", "missing-file")]
    assert results[0].image.getpixel((0, 0)) == (255, 255, 255)
    assert len(HFSource(streamed, image_column="picture", caption_column="caption", limit=2)) == 2


def test_url_column_downloads(image_server, tmp_path):
    path = tmp_path / "urls"
    datasets.Dataset.from_dict(
        {
            "link": [image_server.url("/color/00ff00.png"), image_server.url("/status/410")],
            "text": ["green", "gone"],
        }
    ).save_to_disk(str(path))
    source = HFSource(path, url_column="link", cache_dir=tmp_path / "cache", timeout_s=0.5, retries=0)
    results = list(source)
    assert outcomes(results) == [("row0000000", "item"), ("row0000001", "http-410")]
    assert results[0].image.getpixel((0, 0)) == (0, 255, 0)
    with pytest.raises(ConfigError, match="cache_dir"):
        HFSource(path, url_column="link")


def test_missing_columns_and_paths(saved_dataset, tmp_path):
    with pytest.raises(DataError, match=r"'caption'.*columns found"):
        HFSource(saved_dataset, caption_column="caption")
    with pytest.raises(DataError, match="cannot read"):
        (tmp_path / "notes.txt").write_text("x")
        HFSource(tmp_path / "notes.txt")


def test_without_datasets_installed(saved_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install 'blindspot-atlas\[datasets\]'"):
        HFSource(saved_dataset)
