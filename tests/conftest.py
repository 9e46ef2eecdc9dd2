"""Shared fixtures: tiny world configs and atlases built in code."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from precompute.config import RunConfig, parse_config


@contextmanager
def silent_progress(total, description, unit):
    yield lambda n=1: None


def world_config(n_items: int = 40, **run) -> RunConfig:
    """The embedded world against two planted generators (one with effects), plus a not-yet-built kind."""
    return parse_config({
        "run": {"name": "test-world", "n_items": n_items, **run},
        "source": {"kind": "world", "seed": 3, "size": 32},
        "generators": [
            {"name": "planted-a", "kind": "planted", "seed": 1, "effects": [
                {"effect": "suppress", "concept": "star", "rate": 1.0, "replace_with": "circle"},
                {"effect": "add", "concept": "shadow", "rate": 1.0},
            ]},
            {"name": "plain", "kind": "planted", "seed": 2},
            {"name": "later", "kind": "diffusers", "model": "some/model"},
        ],
    })


def build_atlas(out: Path, config: RunConfig | None = None, **kw) -> Path:
    from precompute.pipeline import run_pipeline

    run_pipeline(config or world_config(), out, progress=silent_progress, **kw)
    return out


@pytest.fixture(scope="session")
def world_atlas(tmp_path_factory) -> Path:
    """A small world atlas shared by read-side tests (never modified by them)."""
    return build_atlas(tmp_path_factory.mktemp("atlas") / "atlas")
