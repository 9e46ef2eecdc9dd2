"""Attribution probes: a planted linear relation is recovered, IG is exact, weak concepts are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from precompute.errors import DataError
from precompute.internal.attribution import ProbeSettings, attribute, column_auroc, linear_ig


def _planted(n: int = 800, features: int = 24, seed: int = 0):
    """Sparse non-negative codes; concept 0 present when features 3 and 7 are strong, concept 1 with feature 11,
    concept 2 on only four images, concept 3 on every image."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(1.0, (n, features)) * (rng.random((n, features)) < 0.3)
    logit0 = 5.0 * x[:, 3] + 3.0 * x[:, 7] - 3.0
    logit1 = 6.0 * x[:, 11] - 2.0
    y = np.zeros((n, 4), dtype=np.float32)
    y[:, 0] = rng.random(n) < 1 / (1 + np.exp(-logit0))
    y[:, 1] = rng.random(n) < 1 / (1 + np.exp(-logit1))
    y[:4, 2] = 1
    y[:, 3] = 1
    return torch.from_numpy(x).float(), sp.csc_array(y), np.stack([logit0, logit1], axis=1)


def test_a_planted_linear_relation_is_recovered_with_a_good_probe():
    x, presence, truth = _planted()
    result = attribute(x, presence, ProbeSettings(min_positives=10, top=3))
    assert set(result.top_features[0, :2].tolist()) == {3, 7}
    assert result.top_features[0, 0] == 3  # the stronger weight and the same code scale
    assert result.top_features[1, 0] == 11
    assert result.top_scores[0, 0] > result.top_scores[0, 2] > -1
    oracle = column_auroc(truth, presence[:, [0, 1]].toarray())  # the true logits score the labels this well
    assert result.auroc[:2] == pytest.approx(oracle, abs=0.05) and (result.auroc[:2] > 0.85).all()
    assert result.positives.tolist()[2:] == [4, 800]


def test_concepts_with_too_few_positives_or_negatives_get_no_probe():
    x, presence, _ = _planted()
    result = attribute(x, presence, ProbeSettings(min_positives=10))
    assert result.fitted.tolist() == [True, True, False, False]
    assert np.isnan(result.auroc[2:]).all() and (result.top_features[2:] == -1).all()


def test_the_closed_form_is_integrated_gradients_and_complete():
    torch.manual_seed(0)
    x = torch.rand(5, 6, dtype=torch.float64) * (torch.rand(5, 6) < 0.6)
    v = torch.randn(6, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    exact = linear_ig(x, v, bias)
    alphas = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000  # midpoint Riemann sum of the path integral
    path = (alphas[:, None, None] * x[None]).requires_grad_(True)  # (a, n, G)
    probability = torch.sigmoid(bias + path @ v)  # (a, n, B)
    numeric = torch.stack([torch.autograd.grad(probability[..., k].sum(), path, retain_graph=True)[0].mean(0) * x
                           for k in range(3)], dim=-1)
    assert exact.numpy() == pytest.approx(numeric.numpy(), abs=1e-6)
    completeness = torch.sigmoid(bias + x @ v) - torch.sigmoid(bias)
    assert exact.sum(dim=1).numpy() == pytest.approx(completeness.numpy(), abs=1e-9)


def test_column_auroc_and_mismatched_rows():
    scores = np.array([[0.1, 0.9], [0.4, 0.8], [0.35, 0.1], [0.8, 0.2]])
    labels = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])
    auc = column_auroc(scores, labels)
    assert auc[0] == pytest.approx(0.75) and np.isnan(auc[1])  # the second column has no negative
    with pytest.raises(DataError, match="rows"):
        attribute(torch.zeros(3, 2), sp.csc_array(np.zeros((4, 2))), ProbeSettings())
