"""The embedded world as a data source: item ``i`` of world ``seed`` is one (caption, image) pair.

Each item draws its scene, its caption and its pixels from three random streams
derived from ``(seed, index)`` only, so item ``i`` is identical whichever process
renders it and in whatever order, and changing the caption noise never moves a
scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precompute.errors import ConfigError
from precompute.world.captions import make_caption
from precompute.world.concepts import Prior, Scene, sample_scene
from precompute.world.render import check_size, render


@dataclass(frozen=True)
class WorldSample:
    """One world item: its id, caption, uint8 RGB image, the scene behind it and object masks."""

    item_id: str
    caption: str
    image: np.ndarray  # (H, W, 3) uint8
    scene: Scene
    masks: np.ndarray  # (n_objects, H, W) bool

    @property
    def annotations(self) -> tuple[str, ...]:
        """Ground truth: the names of the world concepts present in the image."""
        return self.scene.concepts()

    def to_item(self):
        """This sample as a data-source ``Item`` (PIL image, annotations filled in)."""
        from PIL import Image

        from precompute.sources.base import Item

        return Item(self.item_id, self.caption, Image.fromarray(self.image), self.annotations)


def check_seed(seed: object) -> int:
    """``seed`` as a non-negative int, or ``ConfigError``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"world seed must be a non-negative integer, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class World:
    """An endless, reproducible stream of captioned world images.

    ``noise`` is the caption noise rate (a mentioned value swapped for a wrong one);
    ``prior`` defaults to the world's own energies.
    """

    seed: int = 0
    size: int = 64
    noise: float = 0.02
    prior: Prior | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "size", check_size(self.size))
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not 0 <= self.noise <= 1:
            raise ConfigError(f"caption noise must be a number in [0, 1], got {self.noise!r}")
        if self.prior is None:
            object.__setattr__(self, "prior", Prior.default())
        elif not isinstance(self.prior, Prior):
            raise ConfigError(f"prior must be a world Prior, got {type(self.prior).__name__}")

    def item_id(self, index: int) -> str:
        """Stable id of item ``index``, e.g. ``w0-000042``."""
        return f"w{self.seed}-{index:06d}"

    def _streams(self, index: object) -> list[np.random.Generator]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ConfigError(f"world item index must be a non-negative integer, got {index!r}")
        children = np.random.SeedSequence([self.seed, int(index)]).spawn(3)
        return [np.random.default_rng(child) for child in children]

    def scene(self, index: int) -> Scene:
        """The scene of item ``index`` without rendering it (cheap, for true frequencies)."""
        return sample_scene(self._streams(index)[0], self.prior)

    def caption(self, index: int) -> str:
        """The caption of item ``index`` without rendering it."""
        scene_rng, caption_rng, _ = self._streams(index)
        return make_caption(sample_scene(scene_rng, self.prior), caption_rng, self.noise)

    def sample(self, index: int) -> WorldSample:
        """Item ``index``: scene, caption and rendered image."""
        scene_rng, caption_rng, render_rng = self._streams(index)
        scene = sample_scene(scene_rng, self.prior)
        caption = make_caption(scene, caption_rng, self.noise)
        drawn = render(scene, self.size, render_rng)
        return WorldSample(self.item_id(index), caption, drawn.image, scene, drawn.masks)

    def sample_many(self, start: int, n: int) -> list[WorldSample]:
        """Items ``start`` .. ``start + n - 1``."""
        return [self.sample(i) for i in range(start, start + n)]

    def config(self) -> dict:
        """Plain description of this world, for saving next to its outputs."""
        return {"seed": self.seed, "size": self.size, "noise": self.noise, "prior": self.prior.to_dict()}
