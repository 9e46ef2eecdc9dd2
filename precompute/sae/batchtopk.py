"""BatchTopK SAE: top ``k * batch`` activations across the whole batch, a threshold at inference.

Follows Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders" (sections 3.1-3.2)
and ``overcomplete``'s ``sae/batchtopk_sae.py``. In training, the ``k * n_tokens``
largest ReLU'd pre-activations of the batch are kept, so a token may use more or fewer
than ``k`` concepts while the batch average is ``k``. Because that rule makes a token's
code depend on its batch-mates, inference uses a fixed threshold instead:
``codes = pre * (pre > threshold)``. The threshold is estimated during training as the
mean, over batches, of the smallest activation kept (the paper's estimator); after
``threshold_window`` batches the mean becomes an exponential average with that window,
so it follows the encoder as it drifts. It is a saved buffer and can be set by hand
(the paper's RA-SAE-DINOv2-32k uses 0.829).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from precompute.errors import ConfigError
from precompute.sae.base import SAE, SAEConfig, check_int, threshold_codes, topk_codes


@dataclass(frozen=True)
class BatchTopKConfig(SAEConfig):
    """``threshold_window``: batches averaged (then the EMA window) for the threshold."""

    threshold_window: int = 1000

    def validate(self) -> None:
        super().validate()
        check_int("threshold_window", self.threshold_window, 1)


def batch_topk_codes(pre_codes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the ``k * n_tokens`` largest ReLU'd entries of the batch.

    Returns the codes and the smallest positive kept value (``inf`` when none is
    positive), the per-batch sample of the inference threshold.
    """
    acts = pre_codes.relu().reshape(-1)
    n_keep = min(k * pre_codes.shape[0], acts.numel())
    values, indices = acts.topk(n_keep, sorted=False)
    codes = torch.zeros_like(acts).scatter_(0, indices, values).view_as(pre_codes)
    positive = values.detach()
    min_kept = torch.where(positive > 0, positive, torch.full_like(positive, float("inf"))).min()
    return codes, min_kept


class BatchTopKSAE(SAE):
    """Batch-level top-k sparse autoencoder with a saved inference threshold."""

    variant = "batchtopk"
    config_class = BatchTopKConfig

    def __init__(self, config: BatchTopKConfig, **dictionary_init) -> None:
        super().__init__(config, **dictionary_init)
        # NaN = not estimated yet; eval then falls back to per-token top-k
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("threshold_batches", torch.tensor(0, dtype=torch.long))

    @property
    def threshold_is_set(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        """Fix the inference threshold (e.g. a published one, or a recalibrated one)."""
        value = float(value)
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"inference threshold must be a finite number >= 0, got {value}")
        self.threshold.fill_(value)
        self.threshold_batches.clamp_(min=1)

    def _sparsify(self, pre_codes: Tensor, inplace: bool = False) -> Tensor:
        if self.training:
            codes, min_kept = batch_topk_codes(pre_codes, self.config.k)
            self._update_threshold(min_kept)
            return codes
        if self.threshold_is_set:
            return threshold_codes(pre_codes, float(self.threshold), inplace=inplace)
        # an untrained model has no threshold: per-token top-k keeps L0 = k
        return topk_codes(pre_codes, self.config.k, inplace=inplace)

    @torch.no_grad()
    def _update_threshold(self, min_kept: Tensor) -> None:
        """Running mean of the per-batch minimum kept activation (no host sync)."""
        sample = min_kept.float()
        valid = torch.isfinite(sample)
        n = self.threshold_batches
        rate = 1.0 / (n + 1).clamp(max=self.config.threshold_window).float()
        current = torch.where(n == 0, sample, self.threshold + rate * (sample - self.threshold))
        self.threshold.copy_(torch.where(valid, current, self.threshold))
        self.threshold_batches.add_(valid.long())
