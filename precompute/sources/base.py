"""What every data source yields: items of (id, caption, image), and skips with reasons."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Item:
    """One real image-caption pair.

    ``image`` is always an RGB ``PIL.Image`` (sources convert CMYK, 16-bit, palette
    and alpha images before yielding). ``annotations`` carries ground truth when the
    source knows it (the embedded world: the concept names present in the image).
    """

    item_id: str
    caption: str
    image: Image.Image
    annotations: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """An item a source could not use: counted by ``reason`` in the manifest and listed."""

    item_id: str
    reason: str
    detail: str = ""


class Source(Protocol):
    """A data source: iterating yields ``Item`` or ``Skip`` in a deterministic order."""

    name: str

    def __iter__(self) -> Iterator[Item | Skip]: ...

    def __len__(self) -> int:
        """Number of candidate items (before skips), for progress bars."""
        ...
