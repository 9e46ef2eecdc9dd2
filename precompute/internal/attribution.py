"""Attribution of output-lens concepts to internal features (DiffLens, seed 002, "Key Designs" 2).

For every output-lens concept k, a light probe reads an image's internal features,
x = the mean over its captured positions of the coarsest group's SAE codes (codes per
position, then mean-pooled per image), and predicts whether concept k is present in
that generated image: its output-lens energy is > 0 (the concept fires on some token,
the same event as the blindspots paper's firing frequency nu). The probes are
logistic, one per concept, fitted jointly as one multi-output linear model
(standardised inputs, class-balanced cross-entropy, L2 penalty, L-BFGS), in blocks of
concepts so that no (images x concepts) matrix larger than a block is ever held.

Features are ranked by integrated gradients of the probe's probability,
F_k(x) = sigmoid(z_k(x)) with z_k(x) = b_k + sum_j v_jk x_j, from the zero baseline (no
feature active), as DiffLens does with F_x(s) = Pr(y | s). For a linear probe the path
integral has a closed form, so the attribution is exact and costs one matrix product:

    IG_jk(x) = v_jk * x_j * (sigmoid(z_k(x)) - sigmoid(b_k)) / (z_k(x) - b_k)

On the logit z_k itself IG is exactly v_jk * x_j; on the probability every feature of
an image shares the positive factor (sigmoid(z) - sigmoid(b)) / (z - b), so the two
agree on the ranking within an image and the attributions sum to F(x) - F(0)
(completeness). A feature's score for concept k is its IG averaged over the images
where k is present. Probe quality is the AUROC on held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import rankdata
from torch import Tensor

from precompute.errors import DataError

CONCEPT_BLOCK = 2048  # concepts fitted together in one L-BFGS problem


@dataclass(frozen=True)
class ProbeSettings:
    min_positives: int = 10
    holdout: float = 0.25
    l2: float = 1e-3
    steps: int = 100
    top: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Attribution:
    """Per concept: positives, whether a probe was fitted, its held-out AUROC, and its top features."""

    positives: np.ndarray  # (K,) images where the concept is present
    fitted: np.ndarray  # (K,) bool
    auroc: np.ndarray  # (K,) held-out AUROC; NaN exactly when no probe was fitted
    top_features: np.ndarray  # (K, top) feature ids, most attributed first (-1: none)
    top_scores: np.ndarray  # (K, top) mean IG over the concept's positive images


def holdout_mask(n_images: int, share: float, seed: int) -> Tensor:
    """A seeded (n_images,) bool mask of the held-out images (at least one on each side when possible)."""
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))
    held = min(max(1, round(share * n_images)), max(n_images - 1, 0))
    mask = torch.zeros(n_images, dtype=torch.bool)
    mask[order[:held]] = True
    return mask


def column_auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of score column k against label column k (Mann-Whitney, ties averaged); NaN without both classes."""
    ranks = rankdata(scores, axis=0)
    labels = labels.astype(np.float64)
    positives = labels.sum(axis=0)
    negatives = labels.shape[0] - positives
    denominator = positives * negatives
    rank_sums = (ranks * labels).sum(axis=0)
    auc = (rank_sums - positives * (positives + 1) / 2) / np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, auc, np.nan)


def _path_gain(logits: Tensor, bias: Tensor) -> Tensor:
    """(sigmoid(z) - sigmoid(b)) / (z - b): the sigmoid's mean slope from the baseline (sigmoid'(b) at z = b)."""
    moved = logits - bias
    slope = torch.sigmoid(bias) * (1 - torch.sigmoid(bias))
    safe = torch.where(moved.abs() > 1e-9, moved, torch.ones_like(moved))
    return torch.where(moved.abs() > 1e-9, (torch.sigmoid(logits) - torch.sigmoid(bias)) / safe, slope.expand_as(moved))


def linear_ig(x: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Exact integrated gradients (n, G, B) of sigmoid(bias + x @ v) from the zero baseline, per image and probe."""
    gain = _path_gain(torch.addmm(bias, x, v), bias)  # (n, B)
    return x[:, :, None] * v[None, :, :] * gain[:, None, :]


def _fit_block(x: Tensor, y: Tensor, l2: float, steps: int) -> tuple[Tensor, Tensor]:
    """Joint logistic probes on standardised ``x`` (n, G) for label columns ``y`` (n, B): weights (G, B), bias (B,)."""
    n, features = x.shape
    positives = y.sum(dim=0).clamp_min(1)
    negatives = (n - y.sum(dim=0)).clamp_min(1)
    # class-balanced: each class carries half of a concept's loss, so rare concepts are not ignored
    weight = torch.where(y > 0, 0.5 / positives, 0.5 / negatives)
    prior = torch.log(positives / negatives)
    w = torch.zeros(features, y.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    b = prior.clone().to(x.dtype).requires_grad_(True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-7, tolerance_change=1e-10, history_size=20)

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = torch.addmm(b, x, w)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * weight).sum()
        loss = loss + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def attribute(features: Tensor, presence: sp.csc_array, settings: ProbeSettings, progress=None,
              device: str = "cpu") -> Attribution:
    """Fit the probes and rank the features of every concept by integrated gradients.

    ``features`` (images, G): mean-pooled internal codes; ``presence`` (images, K): the
    0/1 presence of each output-lens concept in the same images, in the same order.
    Concepts with fewer than ``min_positives`` positive or negative images, or without both
    classes among the held-out images, get no probe (and no AUROC). The fits run in float64
    on ``device``.
    """
    n_images, n_features = features.shape
    if presence.shape[0] != n_images:
        raise DataError(f"{n_images} images of internal features but {presence.shape[0]} rows of concept presence")
    n_concepts = presence.shape[1]
    present = sp.csc_array(presence != 0)
    positives = np.asarray(present.sum(axis=0)).ravel().astype(np.int64)
    held = holdout_mask(n_images, settings.holdout, settings.seed)
    held_positives = np.asarray(present[held.numpy()].sum(axis=0)).ravel()
    # a probe needs enough of both classes, and both among the held-out images to be measured
    eligible = ((positives >= settings.min_positives) & (n_images - positives >= settings.min_positives)
                & (held_positives > 0) & (int(held.sum()) - held_positives > 0))
    top = min(settings.top, n_features)
    auroc = np.full(n_concepts, np.nan)
    top_features = np.full((n_concepts, top), -1, dtype=np.int64)
    top_scores = np.full((n_concepts, top), np.nan)
    x = features.to(device=device, dtype=torch.float64)
    held, train = held.to(device), (~held).to(device)
    mean, scale = x[train].mean(dim=0), x[train].std(dim=0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    standard = (x - mean) / scale
    chosen = np.flatnonzero(eligible)
    for start in range(0, chosen.size, CONCEPT_BLOCK):
        block = chosen[start:start + CONCEPT_BLOCK]
        y = torch.from_numpy(present[:, block].toarray().astype(np.float64)).to(device)
        w, b = _fit_block(standard[train], y[train], settings.l2, settings.steps)
        logits = torch.addmm(b, standard, w)
        auroc[block] = column_auroc(logits[held].cpu().numpy(), y[held].cpu().numpy())
        # the probe in the raw codes: z = bias + x @ v, so that x = 0 (no feature active) is the baseline
        v = w / scale[:, None]
        bias = b - mean @ v
        gain = _path_gain(logits, bias)  # linear_ig(x, v, bias) averaged over positives, without the (n, G, B) array
        scores = v * (x.T @ (y * gain)) / y.sum(dim=0).clamp_min(1)  # (G, B)
        best, order = scores.topk(top, dim=0)
        top_features[block] = order.T.cpu().numpy()
        top_scores[block] = best.T.cpu().numpy()
        if progress is not None:
            progress(len(block))
    return Attribution(positives=positives, fitted=eligible, auroc=auroc, top_features=top_features,
                       top_scores=top_scores)
