"""Concept labels without any hub: caption words, and for the embedded world its ground truth.

- ``caption_words``: per concept, the caption words whose images carry the most of the
  concept's energy relative to all images (a lift over the base rate), among words
  that appear in enough captions to mean something.
- ``auroc_matrix``: for the embedded world, how well each SAE concept's energy detects
  each world concept (area under the ROC curve over the real images), computed for all
  pairs at once from ranks.
- ``caption_label_evidence``: caption-word labels with evidence, in the manner of
  Neuronpedia's explanation scores: the words are chosen on one half of the real
  images and scored on the other, held-out half by how well the concept's activation
  tells the images whose caption names the label from the others (AUROC; 0.5 is
  chance). That is the world AUROC's statistic (energy against a concept's presence),
  so the two labels of a world concept compare. Scored against mere firing (energy >
  0) instead, the demo's "stars, star, five-pointed" concept, which fires weakly on
  many images, got 0.57 (see the README for the measured numbers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

WORD = re.compile(r"[a-z][a-z-]{2,}")
STOPWORDS = frozenset("""the and with for are was were that this from its into onto over under near
behind front photo picture image drawing rendering illustration shape shapes background some there their
them they has have
having of on in at to by as an or""".split())


def caption_vocabulary(captions: list[str], min_count: int = 5,
                       vocabulary: list[str] | None = None) -> tuple[list[str], sp.csr_array]:
    """Words used in at least ``min_count`` captions (or the given ``vocabulary``), and the
    (captions x words) 0/1 matrix."""
    tokenised = [set(WORD.findall(caption.lower())) - STOPWORDS for caption in captions]
    if vocabulary is None:
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


# The held-out share of the real images on which caption-word labels are scored (the rest chooses the words).
LABEL_HOLDOUT = 0.5


def held_out_split(n_items: int, seed: int, holdout: float = LABEL_HOLDOUT) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions (fit, held_out) of a seeded random split of ``n_items`` real images."""
    order = np.random.default_rng([seed, 0x1abe1]).permutation(n_items)
    cut = n_items - int(round(n_items * holdout))
    return np.sort(order[:cut]), np.sort(order[cut:])


@dataclass(frozen=True)
class EnergyRanks:
    """Each concept's energies ranked over a set of images, the images where it is silent tied at the bottom:
    the non-zeros as (row, col, rank), ``silent`` per concept, ``n`` images (Mann-Whitney's average ranks)."""

    row: np.ndarray
    col: np.ndarray
    rank: np.ndarray
    silent: np.ndarray
    n: int

    @classmethod
    def of(cls, energies: sp.csr_array) -> EnergyRanks:
        fired = sp.coo_array(sp.csr_array(energies))
        keep = fired.data > 0
        row, col, value = fired.row[keep].astype(np.int64), fired.col[keep].astype(np.int64), fired.data[keep]
        order = np.lexsort((value, col))
        row, col, value = row[order], col[order], value[order]
        n, n_concepts = energies.shape
        live = np.bincount(col, minlength=n_concepts)
        silent = n - live
        start = np.concatenate([[0], np.cumsum(live)[:-1]])
        first = np.flatnonzero(np.concatenate([[True], (col[1:] != col[:-1]) | (value[1:] != value[:-1])]))
        run = np.repeat(np.arange(first.size), np.diff(np.append(first, col.size)))
        lowest, highest = first[run], np.append(first[1:], col.size)[run] - 1  # a tied run shares its mean rank
        return cls(row, col, silent[col] + (lowest + highest) / 2 - start[col] + 1, silent, n)


def _label_scores(words: list[list[tuple[str, float]]], vocabulary: list[str], present: sp.csr_array,
                  ranks: EnergyRanks) -> np.ndarray:
    """(K,) AUROC of each concept's energy (``ranks``, over the images of the captions) as a detector of the
    captions that hold one of its label ``words`` (``present``: captions x vocabulary, 0/1): the chance that an
    image whose caption names the label carries more of the concept than one whose caption does not.

    Mann-Whitney from the ranks, for every concept at once and without a dense images x concepts matrix:
    concepts that share a label share its column of ``present @ labels`` (images x distinct labels, sparse),
    and whether an image where a concept fires is a positive is read off that column by key lookup. NaN for
    concepts without words, and where no caption (or every caption) names the label.
    """
    n_concepts, n = len(words), ranks.n
    top = max((len(w) for w in words), default=0)
    if top == 0 or n == 0:
        return np.full(n_concepts, np.nan)
    column = {w: i for i, w in enumerate(vocabulary)}
    ids = np.full((n_concepts, top), -1, dtype=np.int64)
    for k, chosen in enumerate(words):
        ids[k, :len(chosen)] = [column[w] for w, _ in chosen]
    labels, label_of = np.unique(ids, axis=0, return_inverse=True)  # distinct labels (U, top); concept -> label
    label_of, n_labels = label_of.ravel(), len(labels)
    slot, word = np.nonzero(labels >= 0)
    one_hot = sp.csr_array((np.ones(slot.size), (labels[slot, word], slot)), shape=(len(vocabulary), n_labels))
    named = sp.coo_array(sp.csr_array(present @ one_hot))  # (n, U): images whose caption has a label's words
    keys = np.sort(named.row.astype(np.int64) * n_labels + named.col)
    positives = np.bincount(named.col, minlength=n_labels)[label_of].astype(np.float64)  # per concept
    wanted = ranks.row * n_labels + label_of[ranks.col]
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    is_positive = keys[at] == wanted if keys.size else np.zeros(wanted.size, dtype=bool)
    rank_sum = np.bincount(ranks.col[is_positive], weights=ranks.rank[is_positive], minlength=n_concepts)
    silent_positives = positives - np.bincount(ranks.col[is_positive], minlength=n_concepts)
    rank_sum += silent_positives * (ranks.silent + 1) / 2
    negatives = n - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    auc[(positives == 0) | (negatives == 0) | (ids[:, 0] < 0)] = np.nan
    return auc


def caption_label_evidence(energies: sp.csr_array, captions: list[str], seed: int, top: int = 3,
                           min_count: int = 5, holdout: float = LABEL_HOLDOUT
                           ) -> tuple[list[list[tuple[str, float]]], np.ndarray]:
    """Caption-word labels chosen on part of the real images and their AUROC on the held-out rest.

    ``energies``: (real images, K), row i the image of ``captions[i]``. On the fit part, ``caption_words``
    ranks up to ``top`` words per concept by lift, and the label keeps the prefix of them (1 to ``top`` words)
    that the concept's energy detects best (AUROC on the fit part: a weak second word only dilutes the first).
    Returns per concept its label words with their lift and (K,) the held-out AUROC of the label
    (``_label_scores``); NaN where a concept has no label word, or no held-out caption (or every one) names it.
    Shuffled captions score about 0.5.
    """
    energies = sp.csr_array(energies)
    n_items, n_concepts = energies.shape
    fit, held = held_out_split(n_items, seed, holdout)
    fit_captions = [captions[i] for i in fit]
    ranked, vocabulary = caption_words(energies[fit], fit_captions, top=top, min_count=min_count)
    if not vocabulary or held.size == 0:
        return ranked, np.full(n_concepts, np.nan)
    _, present_fit = caption_vocabulary(fit_captions, vocabulary=vocabulary)
    prefixes = [[w[:size] for w in ranked] for size in range(1, top + 1)]
    fit_ranks = EnergyRanks.of(energies[fit])
    fit_scores = np.stack([np.nan_to_num(_label_scores(p, vocabulary, present_fit, fit_ranks), nan=-1.0)
                           for p in prefixes])  # (top, K)
    best = fit_scores.argmax(axis=0)  # the first prefix wins ties: shorter labels
    words = [prefixes[b][k] for k, b in enumerate(best)]
    _, present = caption_vocabulary([captions[i] for i in held], vocabulary=vocabulary)
    return words, _label_scores(words, vocabulary, present, EnergyRanks.of(energies[held]))


def chosen_labels(vlm: list[str | None], caption: list[str], caption_auroc: np.ndarray,
                  world: list[str | None], world_auroc: np.ndarray) -> dict[str, list]:
    """Each concept's label, where it comes from and its evidence (the ``label``, ``label_source`` and
    ``label_auroc`` columns of ``concepts``).

    A VLM label wins (it has no score here); otherwise the better scored of the caption words (held-out AUROC,
    ``caption_label_evidence``) and the embedded world's concept (its AUROC on the real images), a label
    without a score losing to one with; ``#<id>`` when neither exists.
    """
    has_caption = np.array([bool(c) for c in caption], dtype=bool)
    has_world = np.array([bool(w) for w in world], dtype=bool)
    caption_score = np.where(has_caption, np.nan_to_num(caption_auroc, nan=-1.0), -2.0)
    world_score = np.where(has_world, np.nan_to_num(world_auroc, nan=-1.0), -2.0)
    source = np.select([np.array([bool(v) for v in vlm], dtype=bool), has_world & (world_score > caption_score),
                        has_caption], ["vlm", "world", "caption"], "id")
    text = {"vlm": vlm, "world": world, "caption": caption}
    score = np.select([source == "world", source == "caption"], [world_score, caption_score], np.nan)
    return {"label": [text[s][k] if s in text else f"#{k}" for k, s in enumerate(source.tolist())],
            "label_source": source.tolist(), "label_auroc": np.where(score < 0, np.nan, score)}
