"""Concept labels without any hub: caption words, and for the embedded world its ground truth.

- ``caption_words``: per concept, the caption words whose images carry the most of the
  concept's energy relative to all images (a lift over the base rate), among words
  that appear in enough captions to mean something.
- ``auroc_matrix``: for the embedded world, how well each SAE concept's energy detects
  each world concept (area under the ROC curve over the real images), computed for all
  pairs at once from ranks.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

WORD = re.compile(r"[a-z][a-z-]{2,}")
STOPWORDS = frozenset("""the and with for are was were that this from its into onto over under near
behind front photo picture image drawing rendering illustration shape shapes background some there their
them they has have
having of on in at to by as an or""".split())


def caption_vocabulary(captions: list[str], min_count: int = 5) -> tuple[list[str], sp.csr_array]:
    """Words used in at least ``min_count`` captions, and the (captions x words) 0/1 matrix."""
    tokenised = [set(WORD.findall(caption.lower())) - STOPWORDS for caption in captions]
    counts: dict[str, int] = {}
    for words in tokenised:
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    vocabulary = sorted(w for w, c in counts.items() if c >= min_count)
    column = {w: i for i, w in enumerate(vocabulary)}
    rows, cols = [], []
    for row, words in enumerate(tokenised):
        for word in words:
            if word in column:
                rows.append(row)
                cols.append(column[word])
    matrix = sp.csr_array((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                          shape=(len(captions), len(vocabulary)))
    return vocabulary, matrix


def caption_words(energies: sp.csr_array, captions: list[str], top: int = 3,
                  min_count: int = 5, chunk: int = 2048) -> tuple[list[list[tuple[str, float]]], list[str]]:
    """Per concept, the ``top`` caption words by lift: mean energy with the word / mean energy overall."""
    n_concepts = energies.shape[1]
    vocabulary, words = caption_vocabulary(captions, min_count)
    if not vocabulary:
        return [[] for _ in range(n_concepts)], vocabulary
    counts = np.asarray(words.sum(axis=0)).ravel()[:, None]  # (V, 1)
    overall = np.asarray(energies.sum(axis=0)).ravel() / energies.shape[0]
    by_word = sp.csc_array(words.T @ energies)  # (V, K) summed energy of each concept per word, sparse
    labels: list[list[tuple[str, float]]] = []
    for start in range(0, n_concepts, chunk):  # dense only chunk columns at a time
        block = by_word[:, start:start + chunk].toarray() / counts
        base = overall[start:start + chunk][None, :]
        lift = np.divide(block, base, out=np.zeros_like(block), where=base > 0)
        best = np.argsort(-lift, axis=0)[:top]  # (top, chunk)
        picked = np.take_along_axis(lift, best, axis=0)
        labels.extend([(vocabulary[w], float(v)) for w, v in zip(best[:, j], picked[:, j]) if v > 1.0]
                      for j in range(best.shape[1]))
    return labels, vocabulary


def auroc_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every score column against every binary label column: (n_scores, n_labels).

    Mann-Whitney: AUROC = (sum of the positives' ranks - P(P+1)/2) / (P N), with
    average ranks for ties, for all pairs in one matrix product. A label with no
    positive or no negative gets 0.5.
    """
    ranks = rankdata(scores, axis=0)  # (n, S), ties averaged
    labels = labels.astype(np.float64)
    positives = labels.sum(axis=0)  # (L,)
    negatives = labels.shape[0] - positives
    rank_sums = ranks.T @ labels  # (S, L)
    denominator = positives * negatives
    auc = (rank_sums - positives * (positives + 1) / 2) / np.where(denominator > 0, denominator, 1)
    auc[:, denominator == 0] = 0.5
    return auc
