"""Tiny SAEs of every variant and synthetic sparse tokens, built in code."""

from __future__ import annotations

import pytest
import torch

from precompute.sae import RASAE, RASAEConfig, build_sae, kmeans_candidates
from tests.conftest import one_torch_thread

VARIANTS = ("topk", "batchtopk", "rasae", "matryoshka")
DIM, CONCEPTS, K = 16, 64, 4


def synthetic_tokens(n: int = 4096, dim: int = DIM, n_atoms: int = 24, active: int = 2, seed: int = 0) -> torch.Tensor:
    """Tokens that are sparse non-negative combinations of a hidden unit dictionary, plus noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, dim, generator=g)
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    chosen = torch.rand(n, n_atoms, generator=g).topk(active, dim=-1).indices
    coefs = torch.zeros(n, n_atoms).scatter(-1, chosen, 0.5 + torch.rand(n, active, generator=g))
    return coefs @ atoms + 0.01 * torch.randn(n, dim, generator=g)


def make_sae(variant: str, seed: int = 0, tokens: torch.Tensor | None = None, **overrides):
    """A seeded tiny SAE; an RA-SAE gets k-means candidates when ``tokens`` are given."""
    torch.manual_seed(seed)
    config = {"input_dim": DIM, "n_concepts": CONCEPTS, "k": K, **overrides}
    if variant == "rasae" and tokens is not None:
        rasae_config = RASAEConfig(**config)
        candidates = kmeans_candidates(tokens, rasae_config.n_candidates, iters=10, seed=seed)
        return RASAE(rasae_config, candidates=candidates)
    return build_sae(variant, **config)


@pytest.fixture(scope="session")
def tokens() -> torch.Tensor:
    return synthetic_tokens()


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny shapes gain nothing from threads, and the machine is shared: use one."""
    with one_torch_thread():
        yield
