"""Items from a CSV or Parquet table of image urls and captions (LAION style).

The table is read in chunks (``chunk_size`` rows) with pyarrow and each chunk's urls
are downloaded in parallel by ``Downloader``; items come out in row order and only a
bounded window of images is in memory at once, so a million-row table streams.

``download_rows`` is the shared chunk pipeline: the Hugging Face source reuses it for
datasets that hold urls instead of images.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from precompute.errors import BadItem, DataError
from precompute.sources.base import Item, Skip
from precompute.sources.download import Downloader, downloader_options
from precompute.sources.folder import IdGuard, caption_problem, clean_caption

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class UrlRow:
    """One candidate row: its id, the raw url and caption cells, and meta for the Item."""

    item_id: str
    url: object
    caption: object
    meta: dict = field(default_factory=dict)


def download_rows(
    rows: Iterable[UrlRow | Skip], downloader: Downloader, *, chunk_size: int = 256
) -> Iterator[Item | Skip]:
    """Turn url rows into items in row order, downloading one chunk at a time.

    Duplicate ids and empty captions are skipped before any request is made; a
    ``Skip`` in ``rows`` (a row its reader could not parse) is passed through.
    """
    ids = IdGuard()
    for chunk in _batched(rows, chunk_size):
        ready: list[Item | Skip | None] = []
        to_fetch: list[UrlRow] = []
        for row in chunk:
            if isinstance(row, Skip):
                ready.append(row)
                continue
            problem = ids.duplicate(row.item_id)
            if problem is None and clean_caption(row.caption) is None:
                problem = Skip(row.item_id, "empty-caption", caption_problem(row.caption))
            ready.append(problem)
            if problem is None:
                to_fetch.append(row)
        fetched = downloader.fetch_images([row.url for row in to_fetch])
        for done in ready:
            if done is not None:
                yield done
                continue
            index, outcome = next(fetched)
            row = to_fetch[index]
            if isinstance(outcome, BadItem):
                yield Skip(row.item_id, outcome.reason, outcome.detail)
            else:
                yield Item(row.item_id, clean_caption(row.caption), outcome, meta={"url": row.url, **row.meta})


def _batched(rows: Iterable[UrlRow | Skip], size: int) -> Iterator[list[UrlRow | Skip]]:
    """Consecutive lists of ``size`` rows (``itertools.batched`` needs Python 3.12)."""
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class UrlSource:
    """Items from a ``.csv`` or ``.parquet`` table of url + caption rows.

    The item id is the ``id_column`` value if given, else ``row0000042`` (the 0-based
    row index). ``limit`` caps the rows read. Skip reasons: ``empty-caption``,
    ``duplicate-id``, ``bad-line`` (no id in ``id_column``), and the downloader's
    reasons (``bad-url``, ``http-<status>``, ``timeout``, ``connection-error``,
    ``not-an-image``, ``too-large``, ``undecodable``, ``truncated``...). Downloads are
    cached under ``cache_dir`` so a re-run resumes without refetching. Further keyword
    options go to the ``Downloader`` (``download.DOWNLOAD_OPTIONS``: ``timeout_s``,
    ``retries``, ``workers``...).
    """

    name = "urls"

    def __init__(
        self,
        path: str | Path,
        *,
        cache_dir: str | Path,
        url_column: str = "url",
        caption_column: str = "caption",
        id_column: str | None = None,
        limit: int | None = None,
        chunk_size: int = 256,
        **download: Any,
    ):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
            raise DataError(f"expected a .csv or .parquet file of urls and captions, got {self.path}")
        if not self.path.is_file():
            raise DataError(f"url table {self.path} does not exist")
        if limit is not None and limit < 0:
            raise DataError(f"limit must be >= 0 or None, got {limit}")
        if chunk_size < 1:
            raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
        self.is_parquet = suffix in PARQUET_SUFFIXES
        self.columns = [url_column, caption_column] + ([id_column] if id_column else [])
        self.url_column, self.caption_column, self.id_column = url_column, caption_column, id_column
        self.limit = limit
        self.chunk_size = chunk_size
        self.downloader_options = downloader_options(**download)
        self.cache_dir = Path(cache_dir)
        self._row_count: int | None = None
        found = self._column_names()
        missing = [column for column in self.columns if column not in found]
        if missing:
            raise DataError(f"{self.path} has no column {', '.join(map(repr, missing))}; columns found: {found}")

    def __len__(self) -> int:
        if self._row_count is None:
            if self.is_parquet:
                self._row_count = pq.ParquetFile(self.path).metadata.num_rows
            else:  # CSV has no row count; one streaming pass over the smallest column
                self._row_count = sum(batch.num_rows for batch in self._batches([self.url_column]))
        return self._row_count if self.limit is None else min(self._row_count, self.limit)

    def __iter__(self) -> Iterator[Item | Skip]:
        with Downloader(self.cache_dir, **self.downloader_options) as downloader:
            yield from download_rows(self._rows(), downloader, chunk_size=self.chunk_size)
            log.info("url source %s: %s", self.path, dict(downloader.stats))

    def _rows(self) -> Iterator[UrlRow | Skip]:
        rows = itertools.chain.from_iterable(batch.to_pylist() for batch in self._batches(self.columns))
        for index, row in enumerate(itertools.islice(rows, self.limit)):
            fallback_id = f"row{index:07d}"
            meta = {"row": index}
            if self.id_column is None:
                yield UrlRow(fallback_id, row[self.url_column], row[self.caption_column], meta)
                continue
            given = row[self.id_column]
            if given is None or str(given).strip() == "":
                yield Skip(fallback_id, "bad-line", f"no id in column {self.id_column!r}")
                continue
            yield UrlRow(str(given).strip(), row[self.url_column], row[self.caption_column], meta)

    def _column_names(self) -> list[str]:
        try:
            if self.is_parquet:
                return list(pq.ParquetFile(self.path).schema_arrow.names)
            with pacsv.open_csv(self.path, parse_options=self._csv_parse_options()) as reader:
                return list(reader.schema.names)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"cannot read {self.path} as {'Parquet' if self.is_parquet else 'CSV'}: {err}") from err

    def _batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Stream record batches of ``columns``; ids and urls stay text (no "007" -> 7)."""
        try:
            if self.is_parquet:
                yield from pq.ParquetFile(self.path).iter_batches(batch_size=self.chunk_size, columns=columns)
                return
            convert = pacsv.ConvertOptions(
                include_columns=columns,
                column_types={column: pa.string() for column in columns},
                strings_can_be_null=False,
            )
            with pacsv.open_csv(self.path, parse_options=self._csv_parse_options(), convert_options=convert) as reader:
                yield from reader
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"cannot read {self.path}: {err}") from err

    @staticmethod
    def _csv_parse_options() -> pacsv.ParseOptions:
        # Captions may contain quoted newlines.
        return pacsv.ParseOptions(newlines_in_values=True)
