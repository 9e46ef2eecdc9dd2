"""TopK SAE: each token keeps its ``k`` largest pre-activations (ReLU'd).

Follows Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (section 2.3),
and ``overcomplete``'s ``sae/topk_sae.py``: a linear encoder with a pre-encoder bias,
unit-norm decoder atoms, and ``z = ReLU(TopK(W_enc (x - b_dec) + b_enc))``. The same
rule applies in training and at inference, so L0 <= k for every token.
"""

from __future__ import annotations

from torch import Tensor

from precompute.sae.base import SAE, SAEConfig, topk_codes


class TopKSAE(SAE):
    """Per-token top-k sparse autoencoder (exactly ``k`` candidates per token)."""

    variant = "topk"
    config_class = SAEConfig

    def _sparsify(self, pre_codes: Tensor, inplace: bool = False) -> Tensor:
        return topk_codes(pre_codes, self.config.k, inplace=inplace)
