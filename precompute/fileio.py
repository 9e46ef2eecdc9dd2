"""Atomic file writes: a reader never sees a half-written file, and writers never share a temp file.

Every write goes to a temp name of its own beside the target (``.<name>.<pid>-<random>.part``),
then is renamed into place: two processes (or threads) writing the same file at once
each rename a whole file, and the last one wins.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: Path) -> Path:
    """A temp name beside ``path`` that no other writer uses (process id and 64 random bits)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(8)}.part")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s content to; renamed onto ``path`` when the block ends, removed if
    it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temp file beside ``path``, then rename it into place."""
    with atomic_path(path) as temp:
        temp.write_bytes(payload)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_bytes_atomic`` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
