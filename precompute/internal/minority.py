"""Minority features of the internal lens (RAIGen, seed 000, "Key Designs").

Each scored feature (the coarsest Matryoshka group only) gets:

- ``frequency`` nu: the share of the *spatial positions* where it fires. Seed 000 builds
  its dataset D_c from "each spatial position as an n-dimensional sample" (Method,
  Overall Architecture, step 1) and defines nu_i = |{(h, x) in D_c : z_i(h) > 0}| / |D_c|
  (Key Designs, Minority Score, (a)), so nu counts positions, not images.
- ``distinctiveness`` d: the cosine distance between the feature's activation-weighted
  centroid of the images' semantic embeddings, mu_i = sum z_i(h) E(x) / sum z_i(h) over
  D_c, and the global centroid of D_c (Key Designs, (b)). A position carries its image's
  embedding, so the sums run over images weighted by the image's summed codes.
- ``minority`` = d' * (1 - nu'), with d' and nu' min-max normalised over the live
  features (Key Designs, (c)). A feature that never fires is dead: no centroid, no score.

Greedy non-maximum suppression then keeps a diverse set: in descending minority, each
kept feature removes every other feature whose centroid lies within cosine distance
``tau`` (Key Designs, "Neuron de-redundancy"). Seed 000 leaves tau's value open; the
run config's default 0.05 is set from the world demo's centroid distances, where it
merges features whose exemplars show the same world concepts and keeps most others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from precompute.errors import DataError


@dataclass(frozen=True)
class MinorityScores:
    """Per scored feature: raw frequency and distinctiveness, the minority score, centroids (NaN: dead)."""

    frequency: Tensor  # (G,) share of positions where the feature fires
    distinctiveness: Tensor  # (G,) cosine distance of its centroid to the global one; NaN when dead
    minority: Tensor  # (G,) min-max normalised d * (1 - nu) over live features; NaN when dead
    centroids: Tensor  # (G, D) activation-weighted centroids of the semantic embeddings (zeros when dead)
    live: Tensor  # (G,) bool, fires at least once


def _min_max(values: Tensor, mask: Tensor) -> Tensor:
    """Min-max normalise ``values`` over ``mask`` (a constant maps to 0); NaN outside the mask."""
    out = torch.full_like(values, float("nan"))
    if mask.any():
        picked = values[mask]
        span = picked.max() - picked.min()
        out[mask] = (picked - picked.min()) / span if span > 0 else torch.zeros_like(picked)
    return out


def minority_scores(fired: Tensor, n_positions: int, image_sums: Tensor, image_positions: Tensor,
                    embeddings: Tensor) -> MinorityScores:
    """Score every feature from position counts and per-image code sums.

    ``fired`` (G,): positions where each feature is non-zero, out of ``n_positions``.
    ``image_sums`` (images, G): each image's codes summed over its positions.
    ``image_positions`` (images,): positions sampled per image (the global centroid's weights).
    ``embeddings`` (images, D): the images' semantic embeddings (CLIP, or the world encoder's).
    """
    if n_positions < 1:
        raise DataError("no captured positions to score the internal features on")
    if image_sums.shape[0] != embeddings.shape[0] or image_sums.shape[0] != image_positions.shape[0]:
        raise DataError(f"per-image sums ({image_sums.shape[0]}), position counts ({image_positions.shape[0]}) "
                        f"and embeddings ({embeddings.shape[0]}) must cover the same images")
    sums = image_sums.double()
    embeddings = embeddings.double()
    frequency = fired.double() / n_positions
    mass = sums.sum(dim=0)  # (G,)
    live = (fired > 0) & (mass > 0)
    centroids = (sums.T @ embeddings) / mass.clamp_min(1e-300)[:, None]
    centroids[~live] = 0
    weights = image_positions.double()
    global_centroid = weights @ embeddings / weights.sum()
    distance = 1 - F.cosine_similarity(centroids, global_centroid[None, :], dim=1)
    distance[~live] = float("nan")
    minority = _min_max(distance, live) * (1 - _min_max(frequency, live))
    return MinorityScores(frequency=frequency, distinctiveness=distance, minority=minority,
                          centroids=centroids, live=live)


def greedy_nms(scores: Tensor, centroids: Tensor, tau: float, candidates: Tensor | None = None) -> list[int]:
    """Indices kept by greedy suppression, best score first.

    Repeatedly takes the best-scoring remaining candidate and drops every remaining
    one whose centroid is within cosine distance ``tau`` of it: one pass per kept
    feature, each a vectorised distance update.
    """
    remaining = torch.isfinite(scores) if candidates is None else candidates & torch.isfinite(scores)
    unit = F.normalize(centroids.double(), dim=1)
    masked = torch.where(remaining, scores.double(), torch.tensor(float("-inf"), dtype=torch.float64))
    kept: list[int] = []
    while remaining.any():
        best = int(masked.argmax())
        kept.append(best)
        near = (1 - unit @ unit[best]) < tau
        remaining &= ~near
        remaining[best] = False
        masked[~remaining] = float("-inf")
    return kept


def top_images(image_scores: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """Per feature, its ``keep`` best images by score: (G, keep) indices and scores (non-positive: none)."""
    count = min(keep, image_scores.shape[0])
    scores, indices = image_scores.T.topk(count, dim=1)
    return indices, scores


def quantise_maps(maps: Tensor) -> tuple[Tensor, list[bytes]]:
    """Spatial maps (m, rows, cols) -> per-map scale and uint8 row-major bytes scaled to [0, 255].

    The encoding of the atlas's ``heatmaps`` tables: value = byte * scale / 255.
    """
    scale = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    quantised = (maps.clamp_min(0) / scale[:, None, None] * 255).round().to(torch.uint8).numpy()
    return scale.float(), [q.tobytes() for q in quantised]
