"""Server settings, one frozen object passed to ``create_app`` (tests point it at a temp atlas)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    atlas: Path
    host: str = "127.0.0.1"
    port: int = 8000
    # the user label store (outside the atlas, so labels survive rebuilds); None: `<atlas>.labels.json` beside it
    labels: Path | None = None
    # Host header names answered besides loopback and ``host`` (app/security.py); "*" answers any
    allow_hosts: tuple[str, ...] = ()
