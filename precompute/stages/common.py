"""What every stage gets: the config, its work folder, and a progress factory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from precompute.config import RunConfig
from precompute.devices import resolve_device
from precompute.digests import digest_of, file_digest, weights_identity
from precompute.progress import Advance

__all__ = ["SAMPLE_LAYOUT", "SHARD_SIZE", "ProgressFactory", "StageContext", "digest_of", "file_digest",
           "resolve_device", "weights_identity"]

# progress(total, description, unit) -> a context manager yielding advance(n)
ProgressFactory = Callable[[int | None, str, str], AbstractContextManager[Advance]]

SHARD_SIZE = 500
# The sample stage's layout, part of its key: 2 keeps the original pixels of real images downscaled for the atlas.
SAMPLE_LAYOUT = 2


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
            if spec in ("world", "world-heads"):
                from precompute.encoders.world_encoder import SHIPPED_WEIGHTS

                # one encoder, two token layouts: the readout is part of the identity
                self.models["energy_identity"] = weights_identity(SHIPPED_WEIGHTS) + ("" if spec == "world"
                                                                                       else ":heads")
            else:
                self.models["energy_identity"] = weights_identity(spec)
        return self.models["energy_identity"]

    def sample_digest(self) -> str:
        """The key of the sample stage's outputs: the source and the sampling settings."""
        return digest_of(self.config.source.model_dump(mode="json"), self.config.run.model_dump(mode="json"),
                         SAMPLE_LAYOUT)
