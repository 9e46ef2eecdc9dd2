"""The one writer of atlases: build in a temp folder, then swap it into place in one step.

A reader never sees a half-written atlas, nor a missing one: ``AtlasBuilder``
creates ``.<name>.building-<host>-<pid>`` beside the target, and only ``commit``
publishes it. Publishing is one system call: the first atlas is renamed into place,
a rebuild exchanges the two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``,
macOS ``renamex_np(RENAME_SWAP)``), so the target path names the old atlas until the
instant it names the new one; the old one, now under the temp name, is deleted after.
Anything that fails (or is killed) before that leaves the previous atlas untouched;
the next build removes the leftovers of a dead writer.

Where the file system cannot exchange (Windows, some network file systems) the old
atlas is moved aside first and the new one renamed in: a writer killed between the
two leaves the old atlas under ``.<name>.previous-<host>-<pid>``, and the next build
(or the reader's error message) puts it back.

``commit`` also records every table's row count in ``atlas_info`` (``ROW_COUNTS``),
which the reader checks before serving.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

import duckdb

from precompute.atlas.schema import ROW_COUNTS, SCHEMA_VERSION, TABLES
from precompute.errors import AtlasError

log = logging.getLogger(__name__)

ATLAS_DB = "atlas.duckdb"
BUILDING, PREVIOUS = "building", "previous"  # the temp folders' kinds: .<name>.<kind>-<host>-<pid>


def open_read_only(root: Path) -> duckdb.DuckDBPyConnection:
    """The atlas database in folder ``root``, opened read-only: every reader's way in (many readers may share
    one atlas; only the build writes it). ``duckdb.Error`` when it is missing or unreadable."""
    return duckdb.connect(str(Path(root) / ATLAS_DB), read_only=True)


def record_row_counts(db: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Store how many rows every table (but ``atlas_info``) holds, as the reader will check them."""
    counted = [name for name in TABLES if name != "atlas_info"]
    counts = dict(db.execute(" UNION ALL ".join(f"SELECT '{name}', count(*) FROM {name}" for name in counted))
                  .fetchall())
    db.execute("INSERT OR REPLACE INTO atlas_info VALUES (?, ?)", [ROW_COUNTS, json.dumps(counts, sort_keys=True)])
    return counts


def temp_sibling(target: Path, kind: str, pid: int | None = None) -> Path:
    """The temp folder of ``kind`` beside ``target`` for this host and process."""
    return target.parent / f".{target.name}.{kind}-{socket.gethostname()}-{pid or os.getpid()}"


def leftovers(target: Path, kind: str) -> list[Path]:
    """Temp folders of ``kind`` beside ``target`` left by writers of this host that no longer run."""
    prefix = f".{target.name}.{kind}-{socket.gethostname()}-"
    found = []
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = path.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user
    return True


def exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one system call; False where the OS or file system cannot."""
    if not sys.platform.startswith(("linux", "darwin")):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # no C library to load (an unusual Python build)
        return False
    if hasattr(libc, "renameat2"):  # Linux, glibc >= 2.28 or musl
        at_fdcwd, rename_exchange = -100, 2
        done = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif hasattr(libc, "renamex_np"):  # macOS
        rename_swap = 2
        done = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")


def restore_interrupted(target: Path) -> Path | None:
    """Put back the atlas a writer moved aside and did not replace (killed between its two renames)."""
    target = Path(target)
    if target.exists():
        return None
    moved = leftovers(target, PREVIOUS)
    if not moved:
        return None
    os.replace(moved[-1], target)
    log.warning("restored %s, which a build that stopped had moved aside to %s", target, moved[-1].name)
    return target


class AtlasBuilder:
    """Context manager that assembles an atlas folder and publishes it atomically."""

    def __init__(self, target: Path):
        self.target = Path(target).resolve()
        self.temp = temp_sibling(self.target, BUILDING)
        self.connection: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> AtlasBuilder:
        restore_interrupted(self.target)
        if self.target.exists() and not (self.target / ATLAS_DB).is_file():
            raise AtlasError(f"{self.target} exists and is not an atlas (no {ATLAS_DB}); refusing to replace it")
        for stale in leftovers(self.target, BUILDING) + [self.temp]:
            shutil.rmtree(stale, ignore_errors=True)
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
        """Record the row counts, close the database and publish the finished atlas in one step."""
        self.set_info("built_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        record_row_counts(self.db)
        self.db.execute("CHECKPOINT")
        self.db.close()
        self.connection = None
        self._reached("closed")
        self._publish()
        return self.target

    def _publish(self) -> None:
        if not self.target.exists():
            try:
                os.rename(self.temp, self.target)
                self._reached("published")
                return
            except OSError as exc:  # another writer published first: replace its atlas below
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        if exchange(self.temp, self.target):
            self._reached("swapped")
            shutil.rmtree(self.temp, ignore_errors=True)  # the previous atlas, now under the temp name
            return
        previous = temp_sibling(self.target, PREVIOUS)
        os.replace(self.target, previous)
        self._reached("moved-aside")
        os.replace(self.temp, self.target)
        self._reached("swapped")
        shutil.rmtree(previous, ignore_errors=True)

    def _reached(self, step: str) -> None:
        """A point between two steps of ``commit`` ("closed", then "published" or "swapped", with "moved-aside"
        before it where the file system cannot exchange): nothing happens here; tests stop the writer here."""

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.temp.exists():
            shutil.rmtree(self.temp, ignore_errors=True)
