"""The activation histogram behind add-mode strengths: quantiles of each feature's firing codes, chunk by chunk."""

from __future__ import annotations

import math

import pytest
import torch

from precompute.internal.codes import ActivationHistogram


def test_quantiles_match_the_exact_ones_whatever_the_chunks_and_scales():
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([1e-3, 1.0, 50.0, 1.0])
    codes = torch.rand(6000, 4, generator=generator) * scale
    codes[codes < 0.4 * scale] = 0  # sparse: each feature fires on about 60% of the rows
    codes[:, 3] = 0  # a feature that never fires
    histogram = ActivationHistogram(4)
    for chunk in codes.split(1000):
        histogram.add(chunk)
    for q in (0.1, 0.5, 0.9):
        found = histogram.quantile(q)
        for feature in range(3):
            column = codes[:, feature]
            exact = torch.quantile(column[column > 0], q).item()
            assert found[feature].item() == pytest.approx(exact, rel=0.025)
        assert math.isnan(found[3].item())


def test_a_feature_firing_at_one_value_has_that_value_as_every_quantile():
    histogram = ActivationHistogram(2)
    histogram.add(torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 0.0]]))
    assert histogram.quantile(0.9)[0].item() == pytest.approx(3.0, rel=0.025)
    assert histogram.counts.sum().item() == 2
