"""RA-SAE: archetypal constraints, the fused dictionary, k-means candidates."""

from __future__ import annotations

import pytest
import torch

from precompute.errors import ConfigError
from precompute.sae import RASAE, RASAEConfig, TrainConfig, kmeans_candidates, train_sae

from .conftest import CONCEPTS, DIM, K, make_sae


def test_constraints_hold_after_training_steps(tokens):
    sae = make_sae("rasae", tokens=tokens, delta=0.05)
    train_sae(sae, tokens, TrainConfig(batch_size=256, steps=40, lr=1e-2))
    assert (sae.W >= 0).all()
    torch.testing.assert_close(sae.W.sum(-1), torch.ones(CONCEPTS))
    norms = sae.Lambda.norm(dim=-1)
    assert (norms <= 0.05 + 1e-6).all()
    assert (norms > 0.05 - 1e-4).any()  # the relaxation did push against its bound


def test_constrain_projects_w_and_lambda():
    sae = make_sae("rasae", delta=0.5)
    with torch.no_grad():
        sae.W.normal_()
        sae.W[0] = -1.0  # no positive mass left: restarts uniform
        sae.Lambda.normal_(std=3.0)
    sae.constrain_()
    assert (sae.W >= 0).all()
    torch.testing.assert_close(sae.W.sum(-1), torch.ones(CONCEPTS))
    torch.testing.assert_close(sae.W[0], torch.full((CONCEPTS,), 1 / CONCEPTS))
    torch.testing.assert_close(sae.Lambda.norm(dim=-1), torch.full((CONCEPTS,), 0.5))


def test_fused_dictionary_equals_w_c_plus_lambda_and_is_cached_in_eval(tokens):
    sae = make_sae("rasae", tokens=tokens)
    train_sae(sae, tokens, TrainConfig(batch_size=256, steps=10, lr=1e-2))  # ends in eval
    expected = (sae.W @ sae.C + sae.Lambda) * sae.multiplier.exp()
    torch.testing.assert_close(sae.dictionary, expected)
    assert sae.dictionary is sae.dictionary  # fused once, reused
    sae.train()
    assert sae._fused is None and sae.dictionary.requires_grad


def test_topk_sparsity_option_keeps_k_per_token():
    sae = make_sae("rasae", sparsity="topk").eval()
    _, codes = sae.encode(torch.randn(40, DIM))
    assert ((codes > 0).sum(-1) <= K).all()


def test_candidates_must_match_the_config():
    config = RASAEConfig(input_dim=DIM, n_concepts=CONCEPTS, k=K, n_candidates=10)
    with pytest.raises(ConfigError, match=r"\(10, 16\), got \(10, 8\)"):
        RASAE(config, candidates=torch.randn(10, 8))
    with pytest.raises(ConfigError, match="sparsity must be one of"):
        RASAEConfig(input_dim=DIM, n_concepts=CONCEPTS, sparsity="dense")


def test_kmeans_finds_well_separated_centres_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(4, DIM, generator=g)
    points = centres.repeat_interleave(50, dim=0) + 0.1 * torch.randn(200, DIM, generator=g)
    found = kmeans_candidates(points, 4, iters=10, seed=1, chunk=64)
    nearest = torch.cdist(centres, found).min(dim=1).values
    assert (nearest < 0.5).all()
    torch.testing.assert_close(found, kmeans_candidates(points, 4, iters=10, seed=1))
    with pytest.raises(ConfigError, match="at least n_candidates=300"):
        kmeans_candidates(points, 300)
