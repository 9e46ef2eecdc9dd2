"""Datapoint-level analysis (seed 001, section 4.4 and appendix D.4-D.5).

For a pair (x, x') the score is the L2 norm of the difference of their concept
energy vectors: the lowest scores are memorization candidates (the model reproduced
the real image's concepts almost exactly), the highest are divergences. Section
4.5's variant for comparing a base model with its fine-tune (SD 1.5 vs DPO) applies
the temperature sigmoid to the element-wise differences and takes their mean.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from precompute.analysis.delta import check_pair, sigmoid


def datapoint_scores(real: sp.csr_array, generated: sp.csr_array, temperature: float = 0.8) -> dict[str, np.ndarray]:
    """Per-pair ``l2`` distance and section 4.5's ``mean_sigmoid`` score, both of length n_items."""
    check_pair(real, generated)
    difference = (generated - real).tocsr()
    l2 = np.sqrt(np.asarray(difference.multiply(difference).sum(axis=1)).ravel())
    # sigmoid(0) = 0.5 for every concept where both energies are zero; add those back
    # without densifying: mean = (sum over stored entries + 0.5 * zeros) / K.
    n_concepts = real.shape[1]
    stored = difference.copy()
    stored.data = sigmoid(stored.data / temperature) - 0.5
    mean_sigmoid = 0.5 + np.asarray(stored.sum(axis=1)).ravel() / n_concepts
    return {"l2": l2, "mean_sigmoid": mean_sigmoid}
