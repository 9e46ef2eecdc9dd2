"""Data sources: each yields ``Item`` (id, caption, RGB image) or ``Skip`` (id, reason).

``build_source`` turns the ``[source]`` table of a run config into a source.
"""

from __future__ import annotations

from pathlib import Path

from precompute.config import FolderSourceConfig, HFSourceConfig, SourceConfig, UrlSourceConfig, WorldSourceConfig
from precompute.sources.base import Item, Skip, Source

__all__ = ["Item", "Skip", "Source", "build_source"]


def build_source(config: SourceConfig, cache_dir: Path) -> Source:
    """The data source a config's ``[source]`` table describes."""
    if isinstance(config, WorldSourceConfig):
        from precompute.sources.world import WorldSource

        return WorldSource(seed=config.seed, size=config.size, noise=config.noise)
    if isinstance(config, FolderSourceConfig):
        from precompute.sources.folder import FolderSource

        return FolderSource(config.path)
    if isinstance(config, UrlSourceConfig):
        from precompute.sources.urls import UrlSource

        return UrlSource(
            config.path,
            url_column=config.url_column,
            caption_column=config.caption_column,
            id_column=config.id_column,
            cache_dir=config.cache_dir or cache_dir / "downloads",
            timeout_s=config.timeout_s,
            retries=config.retries,
            max_bytes=config.max_bytes,
            workers=config.workers,
        )
    if isinstance(config, HFSourceConfig):
        from precompute.sources.hf import HFSource

        return HFSource(
            config.dataset,
            split=config.split,
            config_name=config.config_name,
            image_column=config.image_column,
            caption_column=config.caption_column,
            url_column=config.url_column,
            streaming=config.streaming,
            cache_dir=cache_dir / "downloads",
        )
    raise TypeError(f"unknown source config {type(config).__name__}")
