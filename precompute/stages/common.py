"""What every stage gets: the config, its work folder, and a progress factory."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class StageContext:
    config: RunConfig
    work: Path
    progress: ProgressFactory
    shard_size: int = SHARD_SIZE

    def sample_digest(self) -> str:
        """The key of the sample stage's outputs: the source and the sampling settings."""
        return digest_of(self.config.source.model_dump(mode="json"), self.config.run.model_dump(mode="json"))
