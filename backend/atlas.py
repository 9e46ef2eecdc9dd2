"""Read side of an atlas: one read-only DuckDB connection, queries as plain functions.

The server never writes the atlas (only ``precompute`` does); every query goes
through ``Atlas.rows`` with bound parameters, on a cursor of its own so concurrent
requests do not share state.

Opening verifies the atlas whole before anything is served (``verify``): the file
holds every block DuckDB says is in use (a truncated copy is caught here, before a
query reaches the missing part), every table of the schema exists and
its first rows read, and every table holds the rows the writer counted at build
time. A damaged atlas raises ``DamagedAtlas`` naming the file and the command that
rebuilds it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from precompute.atlas.schema import ROW_COUNTS, SCHEMA_VERSION, TABLES
from precompute.atlas.writer import ATLAS_DB, PREVIOUS, leftovers, open_read_only
from precompute.errors import AtlasError, BlindspotError

FILE_HEADER = 3 * 4096  # DuckDB's main header and its two database headers precede the blocks
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255  # Linux PATH_MAX and NAME_MAX


class NotFound(BlindspotError, LookupError):
    """A requested id or file does not exist in the atlas (answered as 404)."""

    status = 404


class MalformedPath(BlindspotError, ValueError):
    """A file path no file can have: a NUL or control character, a name past the file system's limits
    (answered as 400)."""

    status = 400


class DamagedAtlas(AtlasError):
    """An atlas whose file is truncated, lacks a table or holds other rows than its build wrote."""


def rebuild_hint(root: Path) -> str:
    return (f"rebuild it with `blindspot precompute CONFIG --out {root}` (`blindspot demo --out {root} --rebuild` "
            "for the demo; finished stages in the work folder are reused)")


class Atlas:
    """An opened, verified atlas folder."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        path = self.root / ATLAS_DB
        if not path.is_file():
            moved = leftovers(self.root, PREVIOUS) if not self.root.exists() else []
            if moved:
                raise AtlasError(f"{self.root} is missing: a build that was replacing it stopped and left the "
                                 f"previous atlas at {moved[-1]}; run the build again (it puts it back first) "
                                 "or rename it back")
            raise AtlasError(f"{self.root} is not an atlas: {ATLAS_DB} not found "
                             "(build one with `blindspot precompute`)")
        try:
            self._db = open_read_only(self.root)
        except duckdb.Error as exc:
            raise DamagedAtlas(f"cannot open {path} ({_first_line(exc)}): {rebuild_hint(self.root)}") from None
        self._lock = threading.Lock()
        self._info: dict[str, str] | None = None
        try:
            self.verify()
        except BaseException:
            self._db.close()
            raise

    def verify(self) -> None:
        """Refuse an atlas that is not whole (see the module docstring); reads counts and first rows, not the data.

        Every check reads metadata or a few rows, never the data itself, so its cost does not grow with the file
        (about 0.15-0.2 s on the demo atlas and on a 76 MB one, where a SHA-256 would grow with it:
        bench/atlas_open_bench.md). A block damaged in the middle of the file is caught by DuckDB's own block
        checksums when a query reads it."""
        path = self.root / ATLAS_DB
        try:
            # blocks in use must all be in the file (a build leaves none free; DuckDB cuts free ones off the end)
            used, block_size = self._db.execute(
                "SELECT used_blocks, block_size FROM pragma_database_size()").fetchone()
            expected = FILE_HEADER + used * block_size
            length = path.stat().st_size
            if length < expected:
                self._damaged(f"the file is {length:,} bytes, its {used} blocks in use need {expected:,}: truncated")
            version = self.info().get("schema_version")
            if version != str(SCHEMA_VERSION):
                raise AtlasError(f"{path} has schema version {version}; this software reads version "
                                 f"{SCHEMA_VERSION}: build it again with `blindspot precompute` (the work folder's "
                                 "finished stages are reused)")
            present = {name for (name,) in self._db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            missing = [name for name in TABLES if name not in present]
            if missing:
                self._damaged(f"table {', '.join(missing)} missing")
            recorded = json.loads(self.info().get(ROW_COUNTS) or "null")
            if not isinstance(recorded, dict):
                self._damaged(f"no row counts recorded in atlas_info ({ROW_COUNTS})")
            counted = [name for name in TABLES if name != "atlas_info"]
            found = dict(self._db.execute(" UNION ALL ".join(
                f"SELECT '{name}', count(*) FROM {name}" for name in counted)).fetchall())
            for name in counted:  # its first rows read: the first block of every column
                self._db.execute(f"SELECT * FROM {name} LIMIT 1").fetchall()
            wrong = [f"{name} has {found[name]:,} rows, the build wrote {recorded.get(name, 0):,}"
                     for name in counted if found[name] != recorded.get(name)]
            if wrong:
                self._damaged("; ".join(wrong[:3]))
        except (duckdb.Error, OSError) as exc:
            self._damaged(_first_line(exc))

    def _damaged(self, reason: str) -> None:
        raise DamagedAtlas(f"damaged atlas {self.root / ATLAS_DB}: {reason}; {rebuild_hint(self.root)}")

    def close(self) -> None:
        self._db.close()

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a parameterised query and return its rows as dicts."""
        with self._lock:
            cursor = self._db.cursor()
        try:
            result = cursor.execute(sql, params or [])
            names = [d[0] for d in result.description]
            return [dict(zip(names, row)) for row in result.fetchall()]
        finally:
            cursor.close()

    def arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a parameterised query and return its result as an Arrow table (bulk reads)."""
        with self._lock:
            cursor = self._db.cursor()
        try:
            return cursor.sql(sql, params=params or None).to_arrow_table()
        finally:
            cursor.close()

    def info(self) -> dict[str, str]:
        """The build's key/value facts (read once: a server never sees its atlas change)."""
        if self._info is None:
            self._info = {r["key"]: r["value"] for r in self.rows("SELECT key, value FROM atlas_info")}
        return dict(self._info)

    def stages(self) -> set[str]:
        """The pipeline stages the build ran (``atlas_info.stages``)."""
        return set(json.loads(self.info().get("stages", "[]")))

    def analysed(self) -> bool:
        """Whether the build ran the analyze stage: the one test of every view that shows blindspot statistics."""
        return "analyze" in self.stages()

    def sources(self) -> list[dict[str, Any]]:
        rows = self.rows("SELECT source_id, kind, label, config, n_images FROM sources "
                         "ORDER BY source_id != 'real', source_id")
        for row in rows:
            row["config"] = json.loads(row["config"])
        return rows

    def count_items(self) -> int:
        return self.rows("SELECT count(*) AS n FROM items")[0]["n"]

    def pairs(self, offset: int, limit: int) -> list[dict[str, Any]]:
        """Items in sample order with the path of every source's image of it."""
        items = self.rows("SELECT item_id, position, caption FROM items ORDER BY position LIMIT ? OFFSET ?",
                          [limit, offset])
        if not items:
            return []
        images = self.rows("SELECT item_id, source_id, path, flag FROM images WHERE item_id IN "
                           "(SELECT unnest(?))", [[i["item_id"] for i in items]])
        by_item: dict[str, dict[str, Any]] = {}
        for image in images:
            by_item.setdefault(image["item_id"], {})[image["source_id"]] = {"path": image["path"], "flag": image["flag"]}
        for item in items:
            item["images"] = by_item.get(item["item_id"], {})
        return items

    def skipped_summary(self) -> list[dict[str, Any]]:
        return self.rows("SELECT stage, source_id, reason, count(*) AS n FROM skipped "
                         "GROUP BY ALL ORDER BY stage, source_id, n DESC")

    def manifests(self) -> list[dict[str, Any]]:
        rows = self.rows("SELECT stage, target, manifest FROM manifests ORDER BY stage, target")
        for row in rows:
            row["manifest"] = json.loads(row["manifest"])
        return rows

    def planted_effects(self) -> list[dict[str, Any]]:
        return self.rows("SELECT source_id, concept, effect, rate, replace_with FROM planted_effects "
                         "ORDER BY source_id, concept")

    def world_frequencies(self) -> list[dict[str, Any]]:
        """Per world concept and source, the share of images that show it (the ground truth)."""
        return self.rows("""
            SELECT c.concept, c.family, c.prior_frequency, s.source_id,
                   count(a.concept) / max(s.n_images) AS frequency
            FROM world_concepts c CROSS JOIN sources s
            LEFT JOIN world_annotations a ON a.concept = c.concept AND a.source_id = s.source_id
            GROUP BY ALL ORDER BY c.family, c.concept, s.source_id""")

    def image_file(self, relative: str) -> Path:
        """The file of an atlas image; a path that leaves the atlas folder is NotFound, one no file can have
        MalformedPath."""
        check_file_path(relative)
        try:
            candidate = (self.root / relative).resolve()
            found = candidate.is_relative_to(self.root / "images") and candidate.is_file()
        except OSError as exc:  # ELOOP, EACCES: a path that cannot be followed is no image either
            raise NotFound(f"no image {relative!r} in this atlas ({exc.strerror})") from None
        if not found:
            raise NotFound(f"no image {relative!r} in this atlas")
        return candidate


def check_file_path(relative: str) -> None:
    """Refuse a path no file can have (MalformedPath): a NUL or other control character, a name longer than
    255 bytes or a path longer than 4,096 (Linux's NAME_MAX and PATH_MAX), a character UTF-8 cannot encode."""
    if any(ord(c) < 32 or ord(c) == 127 for c in relative):
        raise MalformedPath(f"a file path has no control characters (NUL, newline, ...); got {relative[:80]!r}")
    try:
        encoded = relative.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPath(f"a file path is valid UTF-8; got {relative[:80]!r}") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise MalformedPath(f"a file path has at most {MAX_PATH_BYTES} bytes; got {len(encoded)}")
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > MAX_NAME_BYTES:
        raise MalformedPath(f"a file name has at most {MAX_NAME_BYTES} bytes; got one of {longest}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
