"""What stage outputs are keyed by: short stable hashes of JSON-able parts, of files, and of model weights.

A stage's outputs live under a key made of its inputs and config (``digest_of``); an
SAE or a weights folder enters a key by the bytes of its files, not its path, so a
moved work folder stays valid and retrained weights at the same path are noticed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def digest_of(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (stage outputs are keyed by it)."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes, read in 8 MB blocks."""
    hasher = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            hasher.update(block)
    return hasher.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


@functools.lru_cache(maxsize=64)
def _folder_identity(path: Path, stamp: tuple) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return digest_of([(str(f.relative_to(path)) if f != path else f.name, file_digest(f)) for f in files])


def weights_identity(reference: str | Path) -> str:
    """What a model reference stands for, for stage keys: a local folder by the bytes of its files.

    A hub id stands for itself; a folder (or the shipped world weights) is keyed by the
    content of its weight and config files, so retrained weights at the same path make
    the stages that used them run again instead of reusing stale outputs.
    """
    path = Path(reference).expanduser().resolve()
    if not path.exists():
        return str(reference)
    # hashed once per process and state of the folder (large checkpoints take seconds to read)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()) \
        if path.is_dir() else ((str(path), path.stat().st_size, path.stat().st_mtime_ns),)
    return _folder_identity(path, stamp)
