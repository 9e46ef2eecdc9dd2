"""Deterministic seeds per (generator, item): an item's image never depends on its batch.

DESIGN.md section 4 (generate): one image per caption, with a seed fixed by the item
and the generator alone, so the image is the same whatever the batch size, the number
of processes or the point a killed run resumed from. The seed is a stable hash
(BLAKE2b, not Python's salted ``hash``) of the generator's name, its configured seed
and the item id, cut to 63 bits so it fits ``torch.Generator.manual_seed``.
"""

from __future__ import annotations

import hashlib

import torch

SEED_BITS = 63


def item_seed(generator_name: str, generator_seed: int, item_id: str, salt: str = "") -> int:
    """The 63-bit seed of one item under one generator (``salt`` separates other uses, e.g. capture)."""
    key = "\x1f".join((generator_name, str(int(generator_seed)), item_id, salt)).encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def item_generators(seeds: list[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per prompt, for a pipeline's ``generator=[...]`` argument."""
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
