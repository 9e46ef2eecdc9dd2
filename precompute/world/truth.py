"""Ground truth of the world: per-concept frequencies of sets of scenes and their true change.

The detector measures a delta per SAE concept; these are the numbers it is scored
against (rank correlation, recall of planted blindspots).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from precompute.errors import DataError
from precompute.world.concepts import CONCEPT_INDEX, CONCEPTS, Scene


def concept_matrix(scenes: Iterable[Scene]) -> np.ndarray:
    """(n_scenes, n_concepts) bool: which catalogue concepts each scene holds."""
    rows, cols = [], []
    n = 0
    for n, scene in enumerate(scenes, start=1):
        names = scene.concepts()
        rows += [n - 1] * len(names)
        cols += [CONCEPT_INDEX[name] for name in names]
    matrix = np.zeros((n, len(CONCEPTS)), dtype=bool)
    matrix[rows, cols] = True
    return matrix


def concept_frequencies(scenes: Iterable[Scene]) -> dict[str, float]:
    """Share of scenes in which each concept is present."""
    matrix = concept_matrix(scenes)
    if len(matrix) == 0:
        raise DataError("expected at least one scene to count concept frequencies, got none")
    return dict(zip((c.name for c in CONCEPTS), matrix.mean(axis=0).tolist()))


def true_change(real_scenes: Iterable[Scene], gen_scenes: Iterable[Scene]) -> dict[str, float]:
    """Per concept, generated frequency minus real frequency (the change a detector should find)."""
    real = concept_frequencies(real_scenes)
    gen = concept_frequencies(gen_scenes)
    return {name: gen[name] - real[name] for name in real}
