"""AUROC and the linear probe, vectorised over concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.encoders.probe import auroc, fit_linear_probe
from precompute.errors import DataError


def _pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(60, 4)).astype(np.float32)  # many ties
    labels = rng.random((60, 4)) < 0.3
    ours = auroc(torch.from_numpy(scores), torch.from_numpy(labels))
    expected = [_pairwise_auroc(scores[:, k], labels[:, k]) for k in range(4)]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)


def test_auroc_is_nan_for_a_single_class_and_checks_shapes():
    scores = torch.randn(10, 2)
    labels = torch.zeros(10, 2, dtype=torch.bool)
    labels[:5, 1] = True
    result = auroc(scores, labels)
    assert torch.isnan(result[0]) and not torch.isnan(result[1])
    with pytest.raises(DataError, match="one \\(n, k\\) shape"):
        auroc(scores, labels[:, :1])


def test_linear_probe_separates_linearly_coded_labels():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 8, generator=generator) * 3 + 5
    labels = torch.stack([features[:, 0] > 5, features[:, 1] - features[:, 2] > 0], dim=1)
    probe = fit_linear_probe(features[:300], labels[:300])
    assert (auroc(probe(features[300:]), labels[300:]) > 0.97).all()
