"""Per-concept histograms of image energies, one axis per concept shared by every image set.

The concept card compares how strongly a concept fires on the real images and on a
generator's (the activation histogram). The bins are fixed per concept, from 0 to its
largest energy on any image of any set, so any two sets' counts are comparable bin for
bin, and the card reads them instead of every energy of the concept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

HISTOGRAM_BINS = 24


def energy_histograms(matrices: Mapping[str, sp.csr_array], bins: int = HISTOGRAM_BINS
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-concept upper edge (K,) and, per set, counts (K, bins) of the images where the concept fires.

    ``matrices``: set name -> energies (n_images, K), non-zeros where a concept fires.
    A concept's bins split [0, its largest energy] evenly; the largest value falls in
    the last bin. Concepts that never fire get an upper edge of 1 and no counts.
    """
    k = next(iter(matrices.values())).shape[1] if matrices else 0
    upper = np.zeros(k, dtype=np.float64)
    for m in matrices.values():
        if m.nnz:  # energies are positive: the column maximum over stored values and implicit zeros
            upper = np.maximum(upper, np.asarray(sp.csr_array(m).max(axis=0).toarray()).ravel())
    upper = np.where(upper > 0, upper, 1.0)
    sets = {name: sp.coo_array(m) for name, m in matrices.items()}
    counts = {}
    for name, m in sets.items():
        position = np.floor(m.data / upper[m.col] * bins).astype(np.int64)
        index = m.col.astype(np.int64) * bins + np.clip(position, 0, bins - 1)
        counts[name] = np.bincount(index, minlength=k * bins).reshape(k, bins).astype(np.int32)
    return upper, counts
