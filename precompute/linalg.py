"""Small linear-algebra helpers shared by the model code and the evaluation."""

from __future__ import annotations

import torch


def random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    """A Haar-random (dim, dim) orthogonal matrix: QR of a seeded Gaussian, with the sign fix that makes
    the distribution uniform (Mezzadri 2007), float32."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()
