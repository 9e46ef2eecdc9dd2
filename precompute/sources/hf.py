"""Items from a Hugging Face ``datasets`` dataset (optional dependency).

``dataset`` is a hub id or a local path: a folder written by ``save_to_disk`` (read
with ``load_from_disk``), a folder of data files, or a single ``.parquet`` /
``.csv`` / ``.jsonl`` / ``.arrow`` file (read with ``load_dataset``). An already
loaded ``datasets.Dataset`` / ``IterableDataset`` is used as it is (notebooks). Images may be
``datasets.Image`` cells (read undecoded, then decoded by our own safe
``load_rgb``), raw bytes, file paths, PIL images, or urls in ``url_column`` that are
downloaded like the url source does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from precompute.errors import BadItem, ConfigError, DataError
from precompute.images import DEFAULT_MAX_PIXELS, from_pil, load_rgb
from precompute.sources.base import Item, Skip
from precompute.sources.download import Downloader, downloader_options
from precompute.sources.folder import IdGuard, caption_problem, clean_caption
from precompute.sources.urls import UrlRow, download_rows

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'blindspot-atlas[datasets]'"
_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


class HFSource:
    """Items from a Hugging Face dataset split, in dataset order.

    The item id is the ``id_column`` value if given, else ``row0000042``. ``limit``
    caps the rows read. With ``url_column`` set, images are downloaded (cached under
    ``cache_dir``, which is then required) and ``image_column`` is ignored. Skip
    reasons: ``empty-caption``, ``duplicate-id``, ``bad-line`` (no id),
    ``missing-image`` (an empty image cell), the image reasons of ``load_rgb`` and,
    for urls, the downloader's reasons. Further keyword options go to the ``Downloader``
    (``download.DOWNLOAD_OPTIONS``: ``timeout_s``, ``retries``, ``workers``...).
    """

    name = "hf"

    def __init__(
        self,
        dataset: str | Path | Any,
        *,
        split: str = "train",
        config_name: str | None = None,
        image_column: str = "image",
        caption_column: str = "text",
        id_column: str | None = None,
        url_column: str | None = None,
        streaming: bool = False,
        limit: int | None = None,
        cache_dir: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        chunk_size: int = 256,
        **download: Any,
    ):
        if url_column is not None and cache_dir is None:
            raise ConfigError("an HF source with url_column needs cache_dir for the downloaded images")
        if limit is not None and limit < 0:
            raise DataError(f"limit must be >= 0 or None, got {limit}")
        self.dataset_name = str(dataset) if isinstance(dataset, (str, Path)) else type(dataset).__name__
        self.split = split
        self.image_column, self.caption_column = image_column, caption_column
        self.id_column, self.url_column = id_column, url_column
        self.limit = limit
        self.max_pixels = max_pixels
        self.chunk_size = chunk_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.downloader_options = downloader_options(max_pixels=max_pixels, **download)
        datasets = _import_datasets()
        if isinstance(dataset, (str, Path)):
            self._data = self._load(datasets, config_name, streaming)
        else:
            self._data = self._pick_split(datasets, dataset)
        self._check_columns()
        self._data = self._undecoded(datasets, self._data)

    def __len__(self) -> int:
        try:
            total = len(self._data)
        except TypeError:  # a streaming dataset knows its size only from the card, if at all
            splits = getattr(getattr(self._data, "info", None), "splits", None) or {}
            known = splits.get(self.split)
            if known is None or not known.num_examples:
                if self.limit is not None:
                    return self.limit
                raise TypeError(f"the size of streaming dataset {self.dataset_name} is unknown; set limit") from None
            total = known.num_examples
        return total if self.limit is None else min(total, self.limit)

    def __iter__(self) -> Iterator[Item | Skip]:
        if self.url_column is None:
            yield from self._image_rows()
            return
        with Downloader(self.cache_dir, **self.downloader_options) as downloader:
            yield from download_rows(self._url_rows(), downloader, chunk_size=self.chunk_size)

    # -- loading ---------------------------------------------------------------

    def _load(self, datasets: Any, config_name: str | None, streaming: bool) -> Any:
        """Open the split: ``load_from_disk`` for saved folders, else ``load_dataset``."""
        path = Path(self.dataset_name)
        try:
            if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
                return self._pick_split(datasets, datasets.load_from_disk(str(path)))
            if path.is_file():
                builder = _FILE_BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise DataError(f"cannot read {path}: expected one of {sorted(_FILE_BUILDERS)}")
                return datasets.load_dataset(builder, data_files=str(path), split=self.split, streaming=streaming)
            return datasets.load_dataset(self.dataset_name, config_name, split=self.split, streaming=streaming)
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"cannot load Hugging Face dataset {self.dataset_name!r} split {self.split!r}: {err}"
            ) from err

    def _pick_split(self, datasets: Any, loaded: Any) -> Any:
        """Return ``split`` of a dataset dict; a single dataset is returned as it is."""
        if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            return loaded
        if self.split not in loaded:
            raise DataError(f"{self.dataset_name} has no split {self.split!r}; splits found: {list(loaded)}")
        return loaded[self.split]

    def _check_columns(self) -> None:
        found = self._data.column_names
        if found is None:  # streaming without known features: checked row by row instead
            return
        wanted = [self.caption_column, self.url_column or self.image_column]
        wanted += [self.id_column] if self.id_column else []
        missing = [column for column in wanted if column not in found]
        if missing:
            names = ", ".join(map(repr, missing))
            raise DataError(f"{self.dataset_name} has no column {names}; columns found: {found}")

    def _undecoded(self, datasets: Any, data: Any) -> Any:
        """Read ``datasets.Image`` cells as bytes so our own safe decoder handles them."""
        features = getattr(data, "features", None) or {}
        if self.url_column is None and isinstance(features.get(self.image_column), datasets.Image):
            return data.cast_column(self.image_column, datasets.Image(decode=False))
        return data

    # -- rows --------------------------------------------------------------------

    def _rows(self) -> Iterator[tuple[int, dict]]:
        data = self._data
        if self.limit is not None:
            data = data.take(self.limit)
        return enumerate(data)

    def _row_id(self, index: int, row: dict) -> str | Skip:
        fallback_id = f"row{index:07d}"
        if self.id_column is None:
            return fallback_id
        given = row.get(self.id_column)
        if given is None or str(given).strip() == "":
            return Skip(fallback_id, "bad-line", f"no id in column {self.id_column!r}")
        return str(given).strip()

    def _url_rows(self) -> Iterator[UrlRow | Skip]:
        for index, row in self._rows():
            item_id = self._row_id(index, row)
            if isinstance(item_id, Skip):
                yield item_id
            else:
                meta = {"row": index}
                yield UrlRow(item_id, row.get(self.url_column), row.get(self.caption_column), meta)

    def _image_rows(self) -> Iterator[Item | Skip]:
        ids = IdGuard()
        for index, row in self._rows():
            item_id = self._row_id(index, row)
            if isinstance(item_id, Skip):
                yield item_id
                continue
            duplicate = ids.duplicate(item_id)
            if duplicate is not None:
                yield duplicate
                continue
            caption = clean_caption(row.get(self.caption_column))
            if caption is None:
                yield Skip(item_id, "empty-caption", caption_problem(row.get(self.caption_column)))
                continue
            try:
                image = self._decode_cell(row.get(self.image_column))
            except BadItem as err:
                yield Skip(item_id, err.reason, err.detail)
                continue
            yield Item(item_id, caption, image, meta={"row": index})

    def _decode_cell(self, cell: object) -> Image.Image:
        """Decode one image cell of any shape ``datasets`` may hand back."""
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return load_rgb(cell["bytes"], max_pixels=self.max_pixels)
            if cell.get("path"):
                return load_rgb(cell["path"], max_pixels=self.max_pixels)
            raise BadItem("missing-image", "the image cell has neither bytes nor a path")
        if isinstance(cell, (bytes, bytearray)):
            return load_rgb(bytes(cell), max_pixels=self.max_pixels)
        if isinstance(cell, (str, Path)):
            return load_rgb(cell, max_pixels=self.max_pixels)
        if isinstance(cell, Image.Image):
            return from_pil(cell, max_pixels=self.max_pixels, label=f"column {self.image_column!r}")
        if cell is None:
            raise BadItem("missing-image", f"column {self.image_column!r} is empty in this row")
        raise BadItem("undecodable", f"cannot read an image from a {type(cell).__name__} cell")


def _import_datasets() -> Any:
    """Import ``datasets`` lazily: it is an optional, heavy dependency."""
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"the Hugging Face source needs the datasets package: {INSTALL_HINT}") from err
    return datasets
