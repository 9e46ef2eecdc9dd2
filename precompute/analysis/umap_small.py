"""UMAP for small dictionaries, in numpy: the same algorithm as umap-learn, without its JIT.

umap-learn compiles its numba kernels in every new process: about 20 s on 2 cores before
the first layout, for any size (measured: 18.8 s for 64 points, then 0.1 s for the same
call again). That is a sixth of the demo's two-minute budget for a 64-concept layout.
Below ``SMALL_UMAP`` atoms, ``umap_layout`` therefore runs this module: UMAP as McInnes,
Healy and Melville (2018) define it, with umap-learn's defaults where the paper leaves a
choice, vectorised over edges:

1. exact k nearest neighbours under the cosine distance (the point itself first);
2. per point, rho = the distance to its nearest other point and sigma by bisection so
   that sum_j exp(-(d_ij - rho) / sigma) = log2(k) (section 3.1, "local connectivity" 1);
3. the fuzzy union A + A^T - A * A^T of the directed memberships (section 3.1);
4. a spectral initialisation (eigenvectors 2 and 3 of the normalised Laplacian), then
   ``n_epochs`` epochs of stochastic gradient descent on the fuzzy cross-entropy with
   the curve 1 / (1 + a d^(2b)) fitted to ``min_dist`` (section 3.2), each edge sampled
   in proportion to its weight, 5 negative samples per positive one, a learning rate
   decaying linearly from 1.

The one difference from umap-learn: within an epoch all sampled edges move at once
(their gradients are summed) rather than one after another, so layouts agree in their
neighbourhoods, not point by point.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

SMALL_UMAP = 1024  # atoms; above this umap-learn's compiled kernels pay for their compilation (1,500 atoms here: 9 s)
NEGATIVE_SAMPLE_RATE = 5
GRADIENT_CLIP = 4.0


def fit_ab(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """a, b of the low-dimensional similarity 1 / (1 + a d^(2b)) fitted to the offset exponential (section 3.2)."""
    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), x, y)
    return float(a), float(b)


def _cosine_distances(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)


def fuzzy_graph(distances: np.ndarray, n_neighbors: int) -> np.ndarray:
    """The symmetric fuzzy simplicial set (n, n) of a distance matrix, steps 1-3 of the module docstring."""
    n = distances.shape[0]
    order = np.argsort(distances, axis=1, kind="stable")[:, :n_neighbors]
    order[:, 0] = np.arange(n)  # the point itself first, as a tie may put a duplicate there
    knn = np.take_along_axis(distances, order, axis=1)
    others = knn[:, 1:]
    positive = np.where(others > 0, others, np.inf)
    rho = np.where(np.isfinite(positive.min(axis=1)), positive.min(axis=1), 0.0)
    target = np.log2(n_neighbors)
    low, high = np.zeros(n), np.full(n, np.inf)
    sigma = np.ones(n)
    for _ in range(64):  # bisection on every point at once
        psum = np.exp(-np.maximum(others - rho[:, None], 0.0) / sigma[:, None]).sum(axis=1)
        too_big = psum > target
        high = np.where(too_big, sigma, high)
        low = np.where(too_big, low, sigma)
        sigma = np.where(too_big, (low + high) / 2, np.where(np.isinf(high), sigma * 2, (low + high) / 2))
    sigma = np.maximum(sigma, 1e-3 * knn.mean())  # umap-learn's floor for points with equal distances
    weights = np.exp(-np.maximum(others - rho[:, None], 0.0) / sigma[:, None])
    directed = np.zeros((n, n))
    directed[np.repeat(np.arange(n), n_neighbors - 1), order[:, 1:].ravel()] = weights.ravel()
    return directed + directed.T - directed * directed.T


def _spectral_init(graph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    degree = graph.sum(axis=1)
    scale = 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0))
    laplacian = np.eye(len(graph)) - scale[:, None] * graph * scale[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    init = vectors[:, 1:3]
    init = init * (10.0 / max(np.abs(init).max(), 1e-12)) + rng.normal(scale=1e-4, size=init.shape)
    return init


def small_umap(atoms: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, n_epochs: int = 500,
               seed: int = 0) -> np.ndarray:
    """A 2-D UMAP (cosine metric) of ``atoms`` (n, d), n >= 4: the module docstring's algorithm."""
    rng = np.random.default_rng(seed)
    n = atoms.shape[0]
    n_neighbors = min(n_neighbors, n - 1)
    graph = fuzzy_graph(_cosine_distances(atoms.astype(np.float64)), n_neighbors + 1)
    graph[graph < graph.max() / n_epochs] = 0.0  # edges too weak to be sampled once
    heads, tails = np.nonzero(graph)
    weights = graph[heads, tails]
    embedding = _spectral_init(graph, rng)
    embedding = 10.0 * (embedding - embedding.min(axis=0)) / np.maximum(np.ptp(embedding, axis=0), 1e-12)
    a, b = fit_ab(min_dist)
    epochs_per_sample = weights.max() / weights  # each edge sampled about weight / max weight per epoch
    next_sample = epochs_per_sample.copy()
    epochs_per_negative = epochs_per_sample / NEGATIVE_SAMPLE_RATE
    next_negative = epochs_per_negative.copy()
    for epoch in range(n_epochs):
        alpha = 1.0 - epoch / n_epochs
        due = np.nonzero(next_sample <= epoch)[0]
        if due.size == 0:
            continue
        i, j = heads[due], tails[due]
        diff = embedding[i] - embedding[j]
        d2 = (diff ** 2).sum(axis=1)
        attract = np.where(d2 > 0, -2 * a * b * d2 ** np.maximum(b - 1, -50) / (a * d2 ** b + 1), 0.0)
        step = np.clip(attract[:, None] * diff, -GRADIENT_CLIP, GRADIENT_CLIP) * alpha
        update = np.zeros_like(embedding)
        np.add.at(update, i, step)
        np.add.at(update, j, -step)
        n_negative = ((epoch - next_negative[due]) / epochs_per_negative[due]).astype(np.int64) + 1
        neg_head = np.repeat(i, n_negative)
        neg_tail = rng.integers(0, n, size=neg_head.size)
        keep = neg_head != neg_tail
        neg_head, neg_tail = neg_head[keep], neg_tail[keep]
        diff = embedding[neg_head] - embedding[neg_tail]
        d2 = (diff ** 2).sum(axis=1)
        repel = 2 * b / ((1e-3 + d2) * (a * d2 ** b + 1))
        np.add.at(update, neg_head, np.clip(repel[:, None] * diff, -GRADIENT_CLIP, GRADIENT_CLIP) * alpha)
        embedding += update
        next_sample[due] += epochs_per_sample[due]
        next_negative[due] += n_negative * epochs_per_negative[due]
    return embedding.astype(np.float32)
