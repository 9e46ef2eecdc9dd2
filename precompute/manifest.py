"""Run manifests: one JSON document per stage run.

A manifest records what a stage was asked to do (its config), with what software
(package versions), what it produced (counts), how long it took, and every item it
skipped with the reason, so nothing is ever lost silently.
"""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from precompute.fileio import write_text_atomic

TRACKED_PACKAGES = (
    "blindspot-atlas", "torch", "diffusers", "transformers", "accelerate", "safetensors",
    "numpy", "pillow", "duckdb", "pyarrow", "umap-learn",
)
# Skipped items listed one by one in the manifest; past this only the counts grow
# (the full list is always in the stage's skipped table).
MAX_LISTED_SKIPS = 1000


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a run's results."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Manifest:
    """The record of one stage run; ``finish`` stamps the time and writes it."""

    stage: str
    target: str
    config: dict[str, Any]
    counts: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    skipped_items: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def skip(self, item_id: str, reason: str, detail: str = "") -> None:
        """Count a skipped item by reason and list it."""
        self.skipped[reason] += 1
        if len(self.skipped_items) < MAX_LISTED_SKIPS:
            self.skipped_items.append({"item_id": item_id, "reason": reason, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "target": self.target,
            "config": self.config,
            "versions": package_versions(),
            "counts": dict(self.counts),
            "skipped": dict(self.skipped),
            "skipped_items": self.skipped_items,
            "notes": self.notes,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 3),
        }

    def finish(self, path: Path) -> dict[str, Any]:
        """Write the manifest as JSON (atomically) and return it."""
        document = self.to_dict()
        write_text_atomic(path, json.dumps(document, indent=2, sort_keys=True))
        return document
