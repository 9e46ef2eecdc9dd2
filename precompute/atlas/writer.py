"""The one writer of atlases: build in a temp folder, then rename into place.

A reader never sees a half-written atlas: ``AtlasBuilder`` creates
``.<name>.building-<pid>`` beside the target, and only ``commit`` swaps it in (the
previous atlas, if any, is moved aside first and deleted after the swap). Anything
that fails before ``commit`` leaves the previous atlas untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import TracebackType

import duckdb

from precompute.atlas.schema import SCHEMA_VERSION, TABLES
from precompute.errors import AtlasError

ATLAS_DB = "atlas.duckdb"


class AtlasBuilder:
    """Context manager that assembles an atlas folder and publishes it atomically."""

    def __init__(self, target: Path):
        self.target = Path(target).resolve()
        self.temp = self.target.parent / f".{self.target.name}.building-{os.getpid()}"
        self.connection: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> AtlasBuilder:
        if self.target.exists() and not (self.target / ATLAS_DB).is_file():
            raise AtlasError(f"{self.target} exists and is not an atlas (no {ATLAS_DB}); refusing to replace it")
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir(parents=True)
        self.connection = duckdb.connect(str(self.temp / ATLAS_DB))
        for ddl in TABLES.values():
            self.connection.execute(ddl)
        self.set_info("schema_version", str(SCHEMA_VERSION))
        return self

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self.connection is None:
            raise AtlasError("the atlas builder is not open")
        return self.connection

    def set_info(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO atlas_info VALUES (?, ?)", [key, value])

    def add_manifest(self, manifest: dict) -> None:
        self.db.execute(
            "INSERT INTO manifests VALUES (?, ?, ?)",
            [manifest["stage"], manifest["target"], json.dumps(manifest, sort_keys=True)],
        )

    def link_tree(self, source: Path, relative: str) -> None:
        """Place a folder of files at ``relative`` inside the atlas (hard links when possible)."""
        destination = self.temp / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(source, destination, copy_function=os.link)
        except OSError:
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(source, destination)

    def add_model(self, source: Path, relative: str, names: tuple[str, ...] = ("config.json", "model.safetensors")) -> None:
        """Place a saved model's files (``save_pretrained`` layout) at ``relative`` inside the atlas."""
        destination = self.temp / relative
        destination.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (Path(source) / name).is_file():
                raise AtlasError(f"cannot publish the model in {source}: {name} is missing")
            shutil.copy2(Path(source) / name, destination / name)

    def commit(self) -> Path:
        """Close the database and swap the finished atlas into place."""
        self.set_info("built_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.db.execute("CHECKPOINT")
        self.db.close()
        self.connection = None
        previous = self.target.parent / f".{self.target.name}.previous-{os.getpid()}"
        if self.target.exists():
            os.replace(self.target, previous)
        os.replace(self.temp, self.target)
        shutil.rmtree(previous, ignore_errors=True)
        return self.target

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.temp.exists():
            shutil.rmtree(self.temp, ignore_errors=True)
