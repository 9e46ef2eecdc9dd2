"""The explorer's map: a 2-D UMAP of the SAE's dictionary atoms, one layout shared by every model.

Seed 001 appendix C lays the concepts out by their decoder directions (cosine metric),
so neighbours on the map are concepts the SAE writes alike; the layout depends on the
dictionary only, never on a generator, so models are compared on the same map.
"""

from __future__ import annotations

import numpy as np


def umap_layout(atoms: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D UMAP of the dictionary atoms ``(K, d)`` (cosine metric), float32 ``(K, 2)``; all zeros for fewer
    than 4 atoms (UMAP needs neighbours).

    Small dictionaries (fewer than ``SMALL_UMAP`` atoms) take the numpy UMAP of
    ``precompute.analysis.umap_small``, which needs no JIT compilation; larger ones umap-learn.
    """
    if atoms.shape[0] < 4:
        return np.zeros((atoms.shape[0], 2), dtype=np.float32)
    from precompute.analysis.umap_small import SMALL_UMAP, small_umap

    if atoms.shape[0] < SMALL_UMAP:
        return small_umap(atoms, n_neighbors=15, min_dist=0.1, seed=seed)
    import umap

    reducer = umap.UMAP(n_neighbors=min(15, atoms.shape[0] - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(atoms).astype(np.float32)
