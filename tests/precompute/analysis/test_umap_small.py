"""The numpy UMAP of small dictionaries keeps neighbourhoods, as umap-learn does, and a broken layout does not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from precompute.analysis.umap_small import fit_ab, fuzzy_graph, small_umap
from precompute.analysis.umap_layout import umap_layout


def clustered(seed: int = 0, clusters: int = 8, per: int = 8, dim: int = 128):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), per)
    return rng.normal(size=(clusters, dim))[labels] + 0.5 * rng.normal(size=(clusters * per, dim)), labels


def neighbour_agreement(embedding: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    d = ((embedding[:, None] - embedding[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[np.argsort(d, axis=1)[:, :k]] == labels[:, None]).mean())


def test_clusters_stay_together_and_a_random_layout_fails_the_same_scores():
    x, labels = clustered()
    layout = small_umap(x, seed=0)
    assert layout.shape == (64, 2) and layout.dtype == np.float32 and np.isfinite(layout).all()
    assert neighbour_agreement(layout, labels) >= 0.95
    assert trustworthiness(x, layout, n_neighbors=5, metric="cosine") >= 0.95
    broken = np.random.default_rng(1).normal(size=layout.shape)  # the control: a layout that ignores the data
    assert neighbour_agreement(broken, labels) < 0.3
    assert trustworthiness(x, broken, n_neighbors=5, metric="cosine") < 0.7


def test_the_layout_is_deterministic_per_seed_and_used_below_the_size_limit():
    x, _ = clustered(seed=3)
    assert np.array_equal(small_umap(x, seed=4), small_umap(x, seed=4))
    assert np.array_equal(umap_layout(x, seed=4), small_umap(x, seed=4))


def test_the_fuzzy_graph_is_symmetric_with_memberships_in_0_1_and_the_curve_matches_umap():
    x, _ = clustered(seed=5)
    norm = x / np.linalg.norm(x, axis=1, keepdims=True)
    graph = fuzzy_graph(np.clip(1 - norm @ norm.T, 0, 2), 16)
    assert np.allclose(graph, graph.T) and graph.min() >= 0 and graph.max() <= 1 + 1e-12
    assert np.all(np.diag(graph) == 0) and (graph.max(axis=1) == pytest.approx(1.0))  # nearest neighbour: 1
    a, b = fit_ab(0.1)
    assert a == pytest.approx(1.577, abs=0.01) and b == pytest.approx(0.895, abs=0.01)  # umap-learn's values
