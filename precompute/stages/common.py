"""What every stage gets: the config, its work folder, and a progress factory."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precompute.config import RunConfig
from precompute.progress import Advance

# progress(total, description, unit) -> a context manager yielding advance(n)
ProgressFactory = Callable[[int | None, str, str], AbstractContextManager[Advance]]

SHARD_SIZE = 500
# The sample stage's layout, part of its key: 2 keeps the original pixels of real images downscaled for the atlas.
SAMPLE_LAYOUT = 2


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


def resolve_device(device: str) -> str:
    """'auto' is CUDA when a GPU is present, else the CPU; anything else is taken as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass(frozen=True)
class StageContext:
    config: RunConfig
    work: Path
    progress: ProgressFactory
    shard_size: int = SHARD_SIZE
    models: dict = field(default_factory=dict, compare=False)  # loaded once per run, shared by stages

    def energy_model(self):
        """The output lens's energy model, loaded on first use and kept for the run."""
        if "energy" not in self.models:
            from precompute.encoders import load_energy_model

            encode = self.config.encode
            self.models["energy"] = load_energy_model(encode.energy_model, device=resolve_device(encode.device),
                                                      dtype=encode.dtype)
        return self.models["energy"]

    def energy_identity(self) -> str:
        """The energy model's identity for stage keys (``weights_identity``; the shipped encoder for 'world')."""
        if "energy_identity" not in self.models:
            spec = self.config.encode.energy_model
            if spec == "world":
                from precompute.encoders.world_encoder import SHIPPED_WEIGHTS

                spec = SHIPPED_WEIGHTS
            self.models["energy_identity"] = weights_identity(spec)
        return self.models["energy_identity"]

    def sample_digest(self) -> str:
        """The key of the sample stage's outputs: the source and the sampling settings."""
        return digest_of(self.config.source.model_dump(mode="json"), self.config.run.model_dump(mode="json"),
                         SAMPLE_LAYOUT)
