"""A local folder of images with a captions file: the simplest real-data source.

Layout::

    FOLDER/captions.jsonl   {"file": "cats/001.jpg", "caption": "a cat", "id": "optional"}
    FOLDER/captions.csv     file,caption[,id]
    FOLDER/cats/001.jpg ...

``captions.jsonl`` wins when both exist. Items come in file order; a bad line never
stops the run, it becomes a ``Skip`` with a reason (see ``FolderSource``).

This module also holds the small row checks every tabular source shares
(``clean_caption``, ``IdGuard``), so the url and Hugging Face sources skip empty
captions and duplicate ids exactly as this one does.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from precompute.errors import BadItem, DataError
from precompute.images import DEFAULT_MAX_PIXELS, load_rgb
from precompute.sources.base import Item, Skip

log = logging.getLogger(__name__)

CAPTION_FILES = ("captions.jsonl", "captions.csv")


def clean_caption(value: object) -> str | None:
    """Return the stripped caption, or None when it is missing, not text, or blank."""
    if not isinstance(value, str):
        return None
    caption = value.strip()
    return caption or None


def caption_problem(value: object) -> str:
    """Say, for a ``Skip`` detail, why ``value`` is not a usable caption."""
    if value is None:
        return "caption is missing or null"
    if not isinstance(value, str):
        return f"caption is a {type(value).__name__}, not text"
    return "caption is blank"


class IdGuard:
    """Remembers the ids seen so far; the second and later uses of one are duplicates.

    An id counts as seen even when its first item is skipped for another reason, so
    which occurrence survives depends only on the order, never on the image bytes.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def duplicate(self, item_id: str) -> Skip | None:
        """Return a ``duplicate-id`` skip if ``item_id`` was seen before, else record it."""
        if item_id in self._seen:
            return Skip(item_id, "duplicate-id", f"id {item_id!r} was already used by an earlier row")
        self._seen.add(item_id)
        return None


class FolderSource:
    """Items from a local folder with ``captions.jsonl`` or ``captions.csv``.

    ``limit`` caps the number of captions rows read (before skips). Skip reasons:
    ``bad-line``, ``outside-folder``, ``duplicate-id``, ``empty-caption`` and the
    image reasons of ``precompute.images.load_rgb`` (``missing-file``, ``empty-file``,
    ``undecodable``, ``truncated``, ``too-large``, ``unsupported-mode``).
    """

    name = "folder"

    def __init__(
        self,
        path: str | Path,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        limit: int | None = None,
    ):
        self.root = Path(path)
        if not self.root.is_dir():
            raise DataError(f"expected a folder with {' or '.join(CAPTION_FILES)}, got {self.root} (not a folder)")
        if limit is not None and limit < 0:
            raise DataError(f"limit must be >= 0 or None, got {limit}")
        self.max_pixels = max_pixels
        self.limit = limit
        self.captions_path = self._find_captions()
        # Rows are small (a path and a caption); reading them up front gives __len__
        # and turns an unreadable file into one clear error before any work starts.
        self._rows = self._read_rows()

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Item | Skip]:
        ids = IdGuard()
        for fallback_id, record in self._rows:
            yield self._row_to_item(fallback_id, record, ids)

    def _find_captions(self) -> Path:
        for file_name in CAPTION_FILES:
            candidate = self.root / file_name
            if candidate.is_file():
                return candidate
        found = sorted(p.name for p in self.root.iterdir())[:10]
        raise DataError(
            f"expected {' or '.join(CAPTION_FILES)} in {self.root}, found {found or 'an empty folder'}"
        )

    def _read_rows(self) -> list[tuple[str, object]]:
        """Return (fallback id, record) per captions row; a record may be malformed."""
        try:
            text = self.captions_path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read {self.captions_path} as UTF-8 text: {err}") from err
        if self.captions_path.suffix == ".jsonl":
            rows = [(f"line{number:07d}", line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            rows = self._read_csv(text)
        return rows if self.limit is None else rows[: self.limit]

    def _read_csv(self, text: str) -> list[tuple[str, object]]:
        try:
            reader = csv.DictReader(text.splitlines())
            header = reader.fieldnames or []
            if "file" not in header or "caption" not in header:
                raise DataError(
                    f"{self.captions_path} must have a header with columns file,caption (optional id), got {header}"
                )
            return [(f"row{number:07d}", row) for number, row in enumerate(reader, 1)]
        except csv.Error as err:
            raise DataError(f"cannot parse {self.captions_path} as CSV: {err}") from err

    def _row_to_item(self, fallback_id: str, record: object, ids: IdGuard) -> Item | Skip:
        if isinstance(record, str):  # a jsonl line, parsed here so one bad line is one skip
            try:
                record = json.loads(record)
            except json.JSONDecodeError as err:
                return Skip(fallback_id, "bad-line", f"not valid JSON: {err.msg} at column {err.colno}")
            if not isinstance(record, dict):
                return Skip(fallback_id, "bad-line", f"expected a JSON object, got {type(record).__name__}")
        elif None in record.values():  # csv.DictReader fills short rows with None
            return Skip(fallback_id, "bad-line", "the row has fewer fields than the header")

        file_name = record.get("file")
        if not isinstance(file_name, str) or not file_name.strip():
            return Skip(fallback_id, "bad-line", "no 'file' path given")
        relative = _relative_inside(file_name)
        item_id = _item_id(record.get("id"), relative, file_name)
        if item_id is None:
            return Skip(fallback_id, "bad-line", f"'id' must be text or an integer, got {record.get('id')!r}")
        duplicate = ids.duplicate(item_id)
        if duplicate is not None:
            return duplicate
        if relative is None:
            return Skip(item_id, "outside-folder", f"file {file_name!r} points outside {self.root}")
        caption = clean_caption(record.get("caption"))
        if caption is None:
            return Skip(item_id, "empty-caption", caption_problem(record.get("caption")))
        try:
            image = load_rgb(self.root / relative, max_pixels=self.max_pixels)
        except BadItem as err:
            return Skip(item_id, err.reason, err.detail)
        return Item(item_id, caption, image, meta={"file": relative})


def _relative_inside(file_name: str) -> str | None:
    """Normalise ``file_name`` to a forward-slash path inside the folder, or None.

    The check is lexical (absolute paths, drive letters and ``..`` that climbs out are
    refused); symlinks inside the folder are the user's choice and are followed.
    """
    posix = file_name.strip().replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(file_name).drive:
        return None
    normalised = os.path.normpath(posix).replace("\\", "/")
    if normalised in (".", "..") or normalised.startswith("../"):
        return None
    return normalised


def _item_id(given: object, relative: str | None, file_name: str) -> str | None:
    """The ``id`` field if given, else the relative path without its extension."""
    if given is not None and given != "":
        if isinstance(given, bool) or not isinstance(given, (str, int)):
            return None
        return str(given)
    path = relative if relative is not None else file_name.replace("\\", "/")
    return str(PurePosixPath(path).with_suffix(""))
