"""Stability of the blindspot ranking across SAEs trained with different seeds.

The RA-SAE's selling point (seed 001, appendix F.1) is that its dictionary is stable
across training runs. Here two SAEs trained on the same tokens with different seeds
are compared: each concept of the first is matched to the atom of the second with the
highest decoder cosine, and the deltas of matched concepts are rank-correlated.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr


def match_atoms(first: torch.Tensor, second: torch.Tensor, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each atom of ``first``, the index of the most similar atom of ``second`` and their cosine.

    Computed in row chunks, so a 32,000 x 32,000 similarity matrix is never held at once.
    """
    a = torch.nn.functional.normalize(first.float(), dim=1)
    b = torch.nn.functional.normalize(second.float(), dim=1)
    best_index, best_cosine = [], []
    for start in range(0, a.shape[0], chunk):
        cosine, index = (a[start:start + chunk] @ b.T).max(dim=1)
        best_index.append(index)
        best_cosine.append(cosine)
    return torch.cat(best_index).numpy(), torch.cat(best_cosine).numpy()


def delta_stability(delta_first: np.ndarray, delta_second: np.ndarray, match: np.ndarray, cosine: np.ndarray,
                    min_cosine: float = 0.7, live: np.ndarray | None = None) -> dict:
    """Spearman of delta between matched concepts (decoder cosine >= ``min_cosine``).

    ``live``: which concepts of the first SAE fire on some image; a dead concept's decoder is its initialisation,
    matched by chance or not at all, so the share that matters is matched among the live (``matched_live`` of
    ``live``). Without it every concept counts as live.
    """
    keep = cosine >= min_cosine
    live = np.ones(len(cosine), dtype=bool) if live is None else np.asarray(live, dtype=bool)
    rho = float("nan")
    if keep.sum() >= 3:
        x, y = delta_first[keep], delta_second[match[keep]]
        if x.std() > 0 and y.std() > 0:
            rho = float(spearmanr(x, y).statistic)
    return {"spearman": rho, "matched": int(keep.sum()), "concepts": int(len(cosine)), "live": int(live.sum()),
            "matched_live": int((keep & live).sum()),
            "mean_best_cosine": float(cosine.mean()), "min_cosine": min_cosine}
