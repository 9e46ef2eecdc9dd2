"""Linear probes and AUROC, vectorised over all concepts at once.

Used to check that an energy model's tokens linearly encode known concepts: the
world encoder's training report, its tests, and (by the same functions) the
ground-truth evaluation that matches SAE concepts to world concepts (DESIGN
section 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from precompute.errors import DataError


def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Per-column AUROC of ``scores`` (n, k) against bool ``labels`` (n, k); NaN where a column has one class.

    The Mann-Whitney form: the share of (positive, negative) pairs ranked the right
    way, with tied scores counted as half (average ranks).
    """
    if scores.shape != labels.shape or scores.ndim != 2:
        raise DataError(
            f"expected scores and labels of one (n, k) shape, got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    scores = scores.detach().double()
    labels = labels.detach().bool()
    n = scores.shape[0]
    order = scores.argsort(dim=0)
    sorted_scores = scores.gather(0, order)
    # average rank of each run of ties: first and last position of the run, per column
    position = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1).expand_as(scores)
    new_run = torch.ones_like(sorted_scores, dtype=torch.bool)
    new_run[1:] = sorted_scores[1:] != sorted_scores[:-1]
    run_id = new_run.long().cumsum(dim=0) - 1
    run_first = torch.zeros_like(sorted_scores).scatter_reduce(0, run_id, position, "amin", include_self=False)
    run_last = torch.zeros_like(sorted_scores).scatter_reduce(0, run_id, position, "amax", include_self=False)
    sorted_ranks = (run_first.gather(0, run_id) + run_last.gather(0, run_id)) / 2
    ranks = torch.empty_like(sorted_ranks).scatter_(0, order, sorted_ranks)
    n_pos = labels.sum(dim=0).double()
    n_neg = n - n_pos
    rank_sum = (ranks * labels).sum(dim=0)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan"))).float()


def fit_linear_probe(features: Tensor, labels: Tensor, l2: float = 1e-3, iterations: int = 200) -> torch.nn.Linear:
    """One logistic regression per label column, fitted jointly (L-BFGS, L2 penalty ``l2``).

    ``features`` (n, d) are standardised inside the returned layer, so it applies
    to raw features: ``probe(features)`` gives (n, k) logits.
    """
    features = features.detach().float()
    targets = labels.detach().float()
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    x = (features - mean) / std
    probe = torch.nn.Linear(x.shape[1], targets.shape[1])
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimiser = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(probe(x), targets) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    # fold the standardisation into the layer
    with torch.no_grad():
        probe.weight.div_(std)
        probe.bias.sub_(probe.weight @ mean)
    return probe.requires_grad_(False)
