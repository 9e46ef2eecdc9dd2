"""Matryoshka BatchTopK SAE: nested dictionary prefixes, one reconstruction loss each.

Follows Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders" (BatchTopK variant, section 3), as used by RAIGen (seed 000) on the
diffusion bottleneck. The concepts are split into groups of sizes ``group_sizes``;
prefix ``g`` is the union of the first ``g`` groups. Training adds one reconstruction
loss per prefix (``losses.matryoshka_loss``, weights ``group_weights``), so the first
group alone must reconstruct coarse structure. The internal lens scores only that
coarsest group: ``encode(x, prefix=1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

from torch import Tensor

from precompute.errors import ConfigError
from precompute.sae.base import threshold_codes
from precompute.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from precompute.sae.losses import matryoshka_loss


def default_group_sizes(n_concepts: int) -> tuple[int, ...]:
    """Prefixes of 1/8, 1/4, 1/2 and all concepts (fewer groups when tiny)."""
    widths = sorted({w for w in (n_concepts // 8, n_concepts // 4, n_concepts // 2) if w > 0})
    widths.append(n_concepts)
    return tuple(b - a for a, b in zip([0, *widths[:-1]], widths))


@dataclass(frozen=True)
class MatryoshkaConfig(BatchTopKConfig):
    """``group_sizes`` sum to ``n_concepts``; ``group_weights`` (default equal) weight each
    prefix's loss. Both are resolved on construction and saved explicitly."""

    group_sizes: tuple[int, ...] | None = None
    group_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        sizes = self.group_sizes
        if sizes is None:
            sizes = default_group_sizes(self.n_concepts) if isinstance(self.n_concepts, int) else ()
        if not isinstance(sizes, (list, tuple)):
            raise ConfigError(f"group_sizes must be a list of integers, got {sizes!r}")
        object.__setattr__(self, "group_sizes", tuple(sizes))
        weights = self.group_weights
        if weights is None:
            weights = [1.0 / max(len(sizes), 1)] * len(sizes)
        if not isinstance(weights, (list, tuple)):
            raise ConfigError(f"group_weights must be a list of numbers, got {weights!r}")
        object.__setattr__(self, "group_weights", tuple(float(w) for w in weights))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if not self.group_sizes:
            raise ConfigError("group_sizes must name at least one group")
        for size in self.group_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError(f"group_sizes must be positive integers, got {list(self.group_sizes)}")
        if sum(self.group_sizes) != self.n_concepts:
            raise ConfigError(
                f"group_sizes must sum to n_concepts={self.n_concepts}, "
                f"got {list(self.group_sizes)} (sum {sum(self.group_sizes)})"
            )
        if len(self.group_weights) != len(self.group_sizes):
            raise ConfigError(
                f"group_weights needs one weight per group ({len(self.group_sizes)}), "
                f"got {len(self.group_weights)}"
            )
        if any(not w >= 0 for w in self.group_weights) or sum(self.group_weights) <= 0:
            raise ConfigError(f"group_weights must be >= 0 with a positive sum, got {list(self.group_weights)}")


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK SAE whose dictionary prefixes are trained to reconstruct on their own."""

    variant = "matryoshka"
    config_class = MatryoshkaConfig
    reconstruction_loss = staticmethod(matryoshka_loss)

    @property
    def prefix_ends(self) -> tuple[int, ...]:
        """Width of each nested prefix, e.g. ``(8, 16, 32, 64)``."""
        return tuple(accumulate(self.config.group_sizes))

    def prefix_width(self, prefix: int) -> int:
        """Number of concepts in the first ``prefix`` groups."""
        n_groups = len(self.config.group_sizes)
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= n_groups:
            raise ConfigError(f"prefix must be a group count in 1..{n_groups}, got {prefix!r}")
        return self.prefix_ends[prefix - 1]

    def encode(self, x: Tensor, prefix: int | None = None) -> tuple[Tensor, Tensor]:
        """Encode; with ``prefix=g`` return only the first ``g`` groups' concepts.

        The restricted codes equal the full codes' first columns. With an inference
        threshold (eval mode) each column is independent, so only the prefix's part
        of the encoder is computed.
        """
        if prefix is None:
            return super().encode(x)
        width = self.prefix_width(prefix)
        if self.training or not self.threshold_is_set:
            pre_codes, codes = super().encode(x)
            return pre_codes[..., :width], codes[..., :width]
        flat = self._flatten_input(x)
        pre_codes = self._pre_codes(flat, width)
        codes = threshold_codes(pre_codes, float(self.threshold))
        shape = (*x.shape[:-1], width)
        return pre_codes.reshape(shape), codes.reshape(shape)
