"""The embedded world as a data source of real image-caption pairs."""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image

from precompute.sources.base import Item, Skip


class WorldSource:
    """Items of the embedded world: item ``i`` depends only on (seed, i)."""

    name = "world"

    def __init__(self, seed: int = 0, size: int = 64, noise: float = 0.02):
        from precompute.world import World

        self.world = World(seed=seed, size=size, noise=noise)

    def iter_from(self, start: int) -> Iterator[Item | Skip]:
        """Items from candidate position ``start`` on (random access, for resuming)."""
        index = start
        while True:
            sample = self.world.sample(index)
            yield Item(
                item_id=sample.item_id,
                caption=sample.caption,
                image=Image.fromarray(sample.image),
                annotations=tuple(sample.scene.concepts()),
            )
            index += 1

    def __iter__(self) -> Iterator[Item | Skip]:
        return self.iter_from(0)

    def __len__(self) -> int:
        return 2**31 - 1  # the world never runs out; runs stop at n_items
