"""The image sets of a run: the real images and each finished generator's, aligned by position."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from precompute.stages.common import StageContext
from precompute.stages.generate import GENERATOR_KINDS, IMAGES, generator_store
from precompute.stages.sample import ITEMS, sample_store


@dataclass(frozen=True)
class ImageSet:
    """One source's images: ``paths[i]`` is the image of the item at sample position ``positions[i]``.

    For the real set these are the original pixels (a real image downscaled for the
    atlas is read from its kept original), what the energy model encodes.
    """

    source_id: str
    folder: Path
    positions: list[int]
    paths: list[Path]
    shard_of: list[int]  # the sample shard each image belongs to


def image_sets(ctx: StageContext) -> list[ImageSet]:
    """The real set, then every generator whose generate stage has finished."""
    sample = sample_store(ctx)
    real_positions, real_paths, real_shards = [], [], []
    position_of: dict[str, tuple[int, int]] = {}
    for shard in sample.indices():
        for row in sample.read_shard(shard, "items", ITEMS).to_pylist():
            real_positions.append(row["position"])
            real_paths.append(sample.folder / (row["original"] or row["path"]))  # the energy model's pixels
            real_shards.append(shard)
            position_of[row["item_id"]] = (row["position"], shard)
    sets = [ImageSet("real", sample.folder, real_positions, real_paths, real_shards)]
    for generator in ctx.config.generators:
        if generator.kind not in GENERATOR_KINDS:
            continue
        store = generator_store(ctx, generator)
        if store.indices() != sample.indices():
            continue
        positions, paths, shards = [], [], []
        for row in store.read("images", IMAGES).to_pylist():
            position, shard = position_of[row["item_id"]]
            positions.append(position)
            paths.append(store.folder / row["path"])
            shards.append(shard)
        sets.append(ImageSet(generator.name, store.folder, positions, paths, shards))
    return sets
