"""Shard files of a stage: the unit of resumption.

A stage writes its output in shards. Each shard is a few Parquet tables plus a JSON
marker written last; a shard whose marker exists is finished and never redone, so a
killed run resumes where it stopped and ends with the same result. A stage folder
remembers the digest of the inputs and config it was made for: a different digest
means the stage's outputs are stale and the folder is cleared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from precompute.fileio import atomic_path, write_text_atomic


class ShardStore:
    """The shards of one stage (or one generator's part of a stage) in ``folder``."""

    def __init__(self, folder: Path, digest: str):
        self.folder = Path(folder)
        self.digest = digest
        stamp = self.folder / "stage.json"
        if stamp.is_file() and json.loads(stamp.read_text()).get("digest") != digest:
            shutil.rmtree(self.folder)
        (self.folder / "shards").mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            write_text_atomic(stamp, json.dumps({"digest": digest}))

    def _marker(self, index: int) -> Path:
        return self.folder / "shards" / f"{index:05d}.json"

    def finished(self, index: int) -> dict[str, Any] | None:
        """The metadata of shard ``index`` if it is finished, else None."""
        marker = self._marker(index)
        return json.loads(marker.read_text()) if marker.is_file() else None

    def write(self, index: int, tables: dict[str, pa.Table], meta: dict[str, Any]) -> None:
        """Write a shard's tables, then its marker (the marker makes it finished); each file under a temp name
        of this writer's own, so two processes writing one shard never take each other's temp file."""
        for name, table in tables.items():
            with atomic_path(self.folder / "shards" / f"{index:05d}.{name}.parquet") as temp:
                pq.write_table(table, temp)
        write_text_atomic(self._marker(index), json.dumps(meta, sort_keys=True))

    def indices(self) -> list[int]:
        """Indices of all finished shards, in order."""
        return sorted(int(p.stem) for p in (self.folder / "shards").glob("*.json"))

    def read(self, name: str, schema: pa.Schema) -> pa.Table:
        """All finished shards' table ``name`` concatenated in shard order."""
        parts = []
        for index in self.indices():
            path = self.folder / "shards" / f"{index:05d}.{name}.parquet"
            if path.is_file():
                parts.append(pq.read_table(path, schema=schema))
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def read_shard(self, index: int, name: str, schema: pa.Schema) -> pa.Table:
        """One finished shard's table ``name``."""
        path = self.folder / "shards" / f"{index:05d}.{name}.parquet"
        return pq.read_table(path, schema=schema) if path.is_file() else schema.empty_table()

    def metas(self) -> list[dict[str, Any]]:
        return [self.finished(i) or {} for i in self.indices()]
