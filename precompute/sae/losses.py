"""SAE training losses, all with one signature (as ``overcomplete``'s ``sae/losses.py``):

    loss(x, pre_codes, codes, x_hat, sae, **kw) -> dict[str, Tensor]

The dict always has ``"total"`` (what to add to the objective) and names each part,
so the trainer can log parts without knowing which loss produced them. ``x`` and the
codes may have any leading shape; losses flatten them to tokens. ``kw`` may carry
``dictionary`` (the atoms already computed this step) so a structured dictionary is
not recomputed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from precompute.sae.base import SAE


def _tokens(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1]).float()


def mse_loss(x: Tensor, pre_codes: Tensor, codes: Tensor, x_hat: Tensor, sae: SAE, **kw) -> dict[str, Tensor]:
    """Mean squared reconstruction error over all token entries."""
    mse = (_tokens(x) - _tokens(x_hat)).square().mean()
    return {"total": mse, "mse": mse}


def matryoshka_loss(
    x: Tensor, pre_codes: Tensor, codes: Tensor, x_hat: Tensor, sae: SAE, **kw
) -> dict[str, Tensor]:
    """Weighted sum of one reconstruction error per nested prefix of the dictionary.

    Prefix ``g`` reconstructs ``x`` from the first ``prefix_ends[g]`` concepts only
    (Bussmann et al. 2025, Matryoshka SAEs); the early concepts must therefore carry
    the coarse structure on their own. Reconstructions are built incrementally, one
    matmul per group, so the cost equals one full decode.
    """
    atoms = kw.get("dictionary")
    atoms = sae.dictionary if atoms is None else atoms
    target, flat_codes = _tokens(x), _tokens(codes)
    recon = sae.b_dec.float().expand_as(target)
    parts: dict[str, Tensor] = {}
    total = torch.zeros((), device=target.device)
    start = 0
    for g, (end, weight) in enumerate(zip(sae.prefix_ends, sae.config.group_weights)):
        recon = recon + flat_codes[:, start:end] @ atoms[start:end].float()
        mse = (target - recon).square().mean()
        parts[f"mse_prefix_{g + 1}"] = mse
        total = total + weight * mse
        start = end
    parts["mse"] = parts[f"mse_prefix_{len(sae.prefix_ends)}"]
    parts["total"] = total
    return parts


def auxk_loss(
    x: Tensor,
    pre_codes: Tensor,
    codes: Tensor,
    x_hat: Tensor,
    sae: SAE,
    *,
    dead_mask: Tensor | None = None,
    k_aux: int | None = None,
    coef: float = 1 / 32,
    **kw,
) -> dict[str, Tensor]:
    """AuxK loss for dead latents (Gao et al. 2024, section A.2).

    The residual ``e = x - x_hat`` is reconstructed from the ``k_aux`` largest
    (ReLU'd) pre-activations among the dead latents only; its normalised MSE, times
    ``coef``, is added to the objective. Gradients thus reach latents that never win
    the top-k and pull them toward what the live latents miss. Zero when none is dead.
    """
    zero = torch.zeros((), device=x.device)
    if dead_mask is None:
        return {"total": zero, "aux": zero}
    n_dead = int(dead_mask.sum())
    if n_dead == 0:
        return {"total": zero, "aux": zero}
    atoms = kw.get("dictionary")
    atoms = sae.dictionary if atoms is None else atoms
    k = min(k_aux if k_aux is not None else max(sae.config.input_dim // 2, 1), n_dead)
    residual = (_tokens(x) - _tokens(x_hat)).detach()
    dead_acts = _tokens(pre_codes).relu() * dead_mask.to(pre_codes.dtype)
    values, indices = dead_acts.topk(k, dim=-1, sorted=False)
    aux_codes = torch.zeros_like(dead_acts).scatter_(-1, indices, values)
    residual_hat = aux_codes @ atoms.float()
    scale = (residual - residual.mean(dim=0)).square().mean().clamp_min(1e-12)
    aux = (residual_hat - residual).square().mean() / scale
    return {"total": coef * aux, "aux": aux}
