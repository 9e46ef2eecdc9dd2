"""What every stage gets: the config, its work folder, and a progress factory."""

from __future__ import annotations

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


def digest_of(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (stage outputs are keyed by it)."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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

    def sample_digest(self) -> str:
        """The key of the sample stage's outputs: the source and the sampling settings."""
        return digest_of(self.config.source.model_dump(mode="json"), self.config.run.model_dump(mode="json"))
