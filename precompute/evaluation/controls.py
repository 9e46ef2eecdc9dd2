"""Broken lenses every ground-truth metric must fail on (DESIGN.md section 2b).

``rotated_sae`` writes an SAE that reads the energy model's tokens through a random
rotation R: its codes on a token x are the original SAE's codes on R x. Its concepts are
random directions of the token space, mixtures of many world concepts, with the same
sparsity and energy scale as the real lens. A metric that scores it like the real lens
cannot tell a lens that sees the world from one that does not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from precompute.errors import ConfigError
from precompute.linalg import random_orthogonal
from precompute.sae import load_sae

# Parameters and buffers whose last axis is the token dimension: rotated as rows (x -> x R).
ROTATED = ("W_enc", "W_dec", "b_dec", "C", "Lambda")


@torch.no_grad()
def rotated_sae(source: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Save to ``out`` the SAE at ``source`` composed with a random rotation of its input (module docstring).

    Row-vector convention: pre-codes are ``(x - b_dec) W_enc^T + b_enc``. With
    ``W_enc' = W_enc R`` and ``b_dec' = b_dec R`` they equal the original's on ``x R^T``;
    atoms (``W_dec``, or an RA-SAE's candidates ``C`` and relaxation ``Lambda``) rotate
    the same way, so reconstructions come back in the rotated frame.
    """
    sae = load_sae(source)
    rotation = random_orthogonal(sae.input_dim, seed)
    state = sae.state_dict()
    rotated = [name for name in ROTATED if name in state]
    if "W_enc" not in rotated:
        raise ConfigError(f"the SAE at {source} has no encoder matrix W_enc to rotate")
    for name in rotated:
        state[name] = state[name] @ rotation
    sae.load_state_dict(state)
    return sae.save_pretrained(out)
