"""How well the output lens sees the embedded world's concepts: the AUROC of every SAE concept's energy for
every world concept on the real images, and per world concept the SAE concepts that detect it best.

The world's annotations are its truth (which concepts each real image shows); a concept
the lens detects (AUROC at least the evaluation's floor) is one whose planted effect
the evaluation can score (``precompute.evaluation.world``, the detectability table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from precompute.analysis.labels import auroc_matrix

WORLD_DETECTORS = 3  # SAE concepts kept per world concept in ``world_detection``


def world_concept_auroc(real: sp.csr_array, item_ids: Sequence[str], positions: Sequence[int],
                        annotated_items: Sequence[str],
                        annotated_concepts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The world's concept names and the AUROC ``(SAE concepts, world concepts)`` of the real images' energies
    ``real`` (row = sample position) against their annotations (one (item, concept) pair per shown concept)."""
    from precompute.world import CONCEPTS

    names = [c.name for c in CONCEPTS]
    column = {n: i for i, n in enumerate(names)}
    position = dict(zip(item_ids, positions))
    truth = np.zeros((real.shape[0], len(names)), dtype=bool)
    truth[[position[i] for i in annotated_items], [column[c] for c in annotated_concepts]] = True
    return names, auroc_matrix(real.toarray(), truth)


def world_detection(names: list[str], auc: np.ndarray, keep: int = WORLD_DETECTORS) -> pa.Table:
    """Per world concept, the SAE concepts that detect it best: rows (world_concept, rank, concept, auroc).

    ``auc``: (SAE concepts, world concepts). The lens sees a world concept when some SAE
    concept detects it; the evaluation's detectability table reads rank 0.
    """
    keep = min(keep, auc.shape[0])
    order = np.argsort(-auc, axis=0, kind="stable")[:keep]  # (keep, world concepts)
    rank, world = np.indices(order.shape)
    return pa.table({"world_concept": pa.array(np.asarray(names, dtype=object)[world.ravel()], type=pa.string()),
                     "rank": rank.ravel().astype(np.int32), "concept": order.ravel().astype(np.int32),
                     "auroc": auc[order.ravel(), world.ravel()].astype(np.float64)})
