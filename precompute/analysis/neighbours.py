"""Nearest concepts by decoder cosine, for every concept of an SAE dictionary.

Two concepts whose atoms point the same way in the energy model's token space stand
for similar visual content, whatever their UMAP positions (the UMAP is itself a layout
of these atoms, seed 001 appendix C). The analyze stage ranks them once, exactly, so
the concept card reads ten rows instead of scanning the dictionary per request.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def nearest_atoms(dictionary: torch.Tensor | np.ndarray, top: int = 10,
                  block: int = 1024, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` atoms of highest cosine with each atom (itself left out): ids (K, top) and cosines.

    Blocked: ``block`` rows of the (K, K) cosine matrix at a time, one matrix product
    and one top-k each, so memory stays at ``block * K`` floats. ``progress(n)`` is
    called with the number of atoms ranked after each block.
    """
    atoms = torch.as_tensor(np.asarray(dictionary) if isinstance(dictionary, np.ndarray) else dictionary.detach())
    atoms = atoms.to(torch.float32).cpu()
    atoms = atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = atoms.shape[0]
    top = max(0, min(top, k - 1))
    ids = np.zeros((k, top), dtype=np.int32)
    cosines = np.zeros((k, top), dtype=np.float32)
    if top == 0:
        return ids, cosines
    with torch.no_grad():
        for start in range(0, k, block):
            stop = min(start + block, k)
            similarity = atoms[start:stop] @ atoms.T
            similarity[torch.arange(stop - start), torch.arange(start, stop)] = -float("inf")
            values, found = similarity.topk(top, dim=1)
            ids[start:stop] = found.numpy()
            cosines[start:stop] = values.numpy()
            if progress is not None:
                progress(stop - start)
    return ids, cosines
