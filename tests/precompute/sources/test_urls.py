"""UrlSource over CSV and Parquet tables pointing at the local image server."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from precompute.errors import DataError
from precompute.sources.base import Item, Skip
from precompute.sources.urls import UrlSource

FAST = dict(timeout_s=0.5, retries=1, backoff_s=0.01, workers=4)


def table_rows(server):
    """(id, url, caption) rows: good images, a 404, a blank caption, a duplicate id, a bad url."""
    return [
        ("007", server.url("/color/ff0000.png"), "red, with a comma"),
        ("b", server.url("/color/00ff00.png"), "green\nover two lines"),
        ("c", server.url("/status/404"), "gone"),
        ("d", server.url("/color/0000ff.png"), "   "),
        ("b", server.url("/color/0000ff.png"), "same id as the second"),
        ("f", "file:///etc/passwd", "not http"),
        ("g", server.url("/html"), "a web page"),
        ("h", server.url("/color/010203.png"), "dark"),
    ]


EXPECTED = [
    ("007", "item"),
    ("b", "item"),
    ("c", "http-404"),
    ("d", "empty-caption"),
    ("b", "duplicate-id"),
    ("f", "bad-url"),
    ("g", "not-an-image"),
    ("h", "item"),
]


def write_csv(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "url", "caption", "extra"])
        writer.writerows([(*row, "ignored") for row in rows])


def outcomes(results):
    return [(r.item_id, "item" if isinstance(r, Item) else r.reason) for r in results]


def test_csv_source_in_row_order(image_server, tmp_path):
    table = tmp_path / "pairs.csv"
    write_csv(table, table_rows(image_server))
    image_server.reset()
    source = UrlSource(table, cache_dir=tmp_path / "cache", id_column="key", chunk_size=3, **FAST)
    assert source.name == "urls" and len(source) == 8
    results = list(source)
    assert outcomes(results) == EXPECTED
    red, green = results[0], results[1]
    assert red.caption == "red, with a comma" and red.image.getpixel((0, 0)) == (255, 0, 0)
    assert green.caption == "green\nover two lines" and green.image.getpixel((0, 0)) == (0, 255, 0)
    assert red.meta == {"url": image_server.url("/color/ff0000.png"), "row": 0}
    assert all(skip.detail for skip in results if isinstance(skip, Skip))

    # Blank captions and duplicate ids are never downloaded.
    assert image_server.counts["/color/0000ff.png"] == 0


def test_parquet_source_with_row_ids_and_limit(image_server, tmp_path):
    rows = table_rows(image_server)
    table = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({"url": [r[1] for r in rows], "text": [r[2] for r in rows[:-1]] + [None]}),
        table,
    )
    source = UrlSource(table, cache_dir=tmp_path / "cache", caption_column="text", **FAST)
    assert len(source) == 8
    results = list(source)
    assert outcomes(results) == [
        ("row0000000", "item"),
        ("row0000001", "item"),
        ("row0000002", "http-404"),
        ("row0000003", "empty-caption"),
        ("row0000004", "item"),  # no id column: no duplicates
        ("row0000005", "bad-url"),
        ("row0000006", "not-an-image"),
        ("row0000007", "empty-caption"),
    ]
    assert results[4].image.getpixel((0, 0)) == (0, 0, 255)

    limited = UrlSource(table, cache_dir=tmp_path / "cache", caption_column="text", limit=2, **FAST)
    assert len(limited) == 2
    image_server.reset()
    assert outcomes(limited) == [("row0000000", "item"), ("row0000001", "item")]
    assert sum(image_server.counts.values()) == 0, "second pass is served from the cache"


def test_parquet_integer_ids(image_server, tmp_path):
    table = tmp_path / "ids.parquet"
    urls = [image_server.url("/color/ff0000.png")] * 2
    pq.write_table(pa.table({"id": [7, 7], "url": urls, "caption": ["a", "b"]}), table)
    results = list(UrlSource(table, cache_dir=tmp_path / "cache", id_column="id", **FAST))
    assert outcomes(results) == [("7", "item"), ("7", "duplicate-id")]


def test_missing_column_names_the_columns_found(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("link,caption\nhttp://x/a.png,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"'url'.*link"):
        UrlSource(table, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"\.csv or \.parquet"):
        UrlSource(tmp_path / "pairs.txt", cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        UrlSource(tmp_path / "absent.parquet", cache_dir=tmp_path / "cache")
