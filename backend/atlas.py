"""Read side of an atlas: one read-only DuckDB connection, queries as plain functions.

The server never writes the atlas (only ``precompute`` does); every query goes
through ``Atlas.rows`` with bound parameters, on a cursor of its own so concurrent
requests do not share state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from precompute.atlas.schema import SCHEMA_VERSION
from precompute.atlas.writer import ATLAS_DB
from precompute.errors import AtlasError


class NotFound(LookupError):
    """A requested id or file does not exist in the atlas (answered as 404)."""


class Atlas:
    """An opened atlas folder."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        path = self.root / ATLAS_DB
        if not path.is_file():
            raise AtlasError(f"{self.root} is not an atlas: {ATLAS_DB} not found (build one with `blindspot precompute`)")
        try:
            self._db = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise AtlasError(f"cannot open {path}: {exc}") from None
        self._lock = threading.Lock()
        self._info: dict[str, str] | None = None
        version = self.info().get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise AtlasError(f"{path} has schema version {version}; this software reads version {SCHEMA_VERSION}: "
                             "build it again with `blindspot precompute` (the work folder's finished stages are reused)")

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

    def blindspots(self, source_id: str, direction: str, limit: int = 8,
                   labels: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
        """The most suppressed (``direction='suppressed'``) or exaggerated concepts of a generator, labelled with
        the user's labels where there are (``labels``: concept -> label)."""
        from backend.query import USER_LABELS, user_label_params  # backend.query imports this module

        order = "s.delta ASC" if direction == "suppressed" else "s.delta DESC"
        flag = "s.suppressed" if direction == "suppressed" else "s.exaggerated"
        return self.rows(f"""
            WITH {USER_LABELS}
            SELECT s.concept, coalesce(u.label, c.label) AS label, c.world_concept, c.label_auroc,
                   u.label IS NOT NULL AS user_label, s.delta, s.ci_low, s.ci_high, s.significant, s.nu_real, s.nu_gen,
                   (SELECT path FROM exemplars x JOIN images i ON i.item_id = x.item_id AND i.source_id = 'real'
                    WHERE x.source_id = 'real' AND x.concept = s.concept AND x.rank = 0) AS real_exemplar
            FROM concept_stats s JOIN concepts c USING (concept) LEFT JOIN user_labels u ON u.concept = s.concept
            WHERE s.source_id = ? AND {flag} AND NOT c.is_dead
            ORDER BY {order}, s.concept LIMIT ?""", [*user_label_params(labels), source_id, limit])

    def image_file(self, relative: str) -> Path:
        """The file of an atlas image; a path that leaves the atlas folder is NotFound."""
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root / "images") or not candidate.is_file():
            raise NotFound(f"no image {relative!r} in this atlas")
        return candidate
