"""Relaxed Archetypal SAE (RA-SAE): atoms anchored to the convex hull of the data.

Follows Fel et al. 2025, "Archetypal SAE" (eq. 4), as used by the blindspots paper
(seed 001, section 3 and appendix F.1), and ``overcomplete``'s
``sae/archetypal_dictionary.py`` (``RelaxedArchetypalDictionary``):

    D = (W C + Lambda) * exp(multiplier)

* ``C`` (n_candidates, input_dim): fixed candidate points, the k-means centroids of
  training tokens (``kmeans_candidates``); a buffer, never trained.
* ``W`` (n_concepts, n_candidates): row-stochastic. Like the library (and unlike a
  softmax parametrisation) ``W`` is a plain parameter projected after every step:
  ReLU then divide each row by its sum. A row that lost all mass restarts uniform.
* ``Lambda`` (n_concepts, input_dim): the relaxation, rescaled after every step so
  that ``||Lambda_k|| <= delta``. ``delta`` defaults to 1.0, the library default; the
  paper does not state the value it used.
* ``multiplier``: a trained scalar log-scale (library ``use_multiplier=True``), which
  places atoms in the conic rather than convex hull.

The encoder is the BatchTopK one by default (the published RA-SAE-DINOv2-32k uses k=5
with an inference threshold of 0.829); ``sparsity="topk"`` gives per-token TopK. As in
the library there is no decoder bias by default, so reconstructions live in the cone
of the data. In eval mode the dictionary is fused once (``fuse()``) and cached, so
inference is a plain matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from precompute.errors import ConfigError
from precompute.sae.base import check_float, check_int, topk_codes
from precompute.sae.batchtopk import BatchTopKConfig, BatchTopKSAE

SPARSITY_RULES = ("batchtopk", "topk")


@dataclass(frozen=True)
class RASAEConfig(BatchTopKConfig):
    """``n_candidates`` defaults to ``n_concepts`` (resolved on construction)."""

    unit_norm_decoder: bool = False
    decoder_bias: bool = False
    n_candidates: int | None = None
    delta: float = 1.0
    sparsity: str = "batchtopk"
    use_multiplier: bool = True

    def __post_init__(self) -> None:
        if self.n_candidates is None:
            object.__setattr__(self, "n_candidates", self.n_concepts)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_int("n_candidates", self.n_candidates, 1)
        check_float("delta", self.delta, 0.0)
        if self.sparsity not in SPARSITY_RULES:
            raise ConfigError(f"sparsity must be one of {SPARSITY_RULES}, got {self.sparsity!r}")
        if self.unit_norm_decoder:
            raise ConfigError("RA-SAE atoms are convex combinations of data: unit_norm_decoder must be false")
        if not isinstance(self.use_multiplier, bool):
            raise ConfigError(f"use_multiplier must be true or false, got {self.use_multiplier!r}")


class RASAE(BatchTopKSAE):
    """Relaxed archetypal SAE. Pass ``candidates`` (from ``kmeans_candidates``) when
    training from scratch; ``from_pretrained`` restores them from the weights file."""

    variant = "rasae"
    config_class = RASAEConfig

    def __init__(self, config: RASAEConfig, candidates: Tensor | None = None) -> None:
        super().__init__(config, candidates=candidates)

    def _build_dictionary(self, candidates: Tensor | None = None) -> None:
        c = self.config
        if candidates is None:
            candidates = torch.randn(c.n_candidates, c.input_dim)
        if not isinstance(candidates, Tensor) or tuple(candidates.shape) != (c.n_candidates, c.input_dim):
            got = tuple(candidates.shape) if isinstance(candidates, Tensor) else type(candidates).__name__
            raise ConfigError(
                f"RA-SAE candidates must have shape (n_candidates, input_dim) = "
                f"({c.n_candidates}, {c.input_dim}), got {got}"
            )
        self.register_buffer("C", candidates.detach().float().clone())
        self.W = nn.Parameter(torch.empty(c.n_concepts, c.n_candidates))
        self.Lambda = nn.Parameter(torch.zeros(c.n_concepts, c.input_dim))
        if c.use_multiplier:
            self.multiplier = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("multiplier", torch.zeros(()))
        self.register_buffer("_fused", None, persistent=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Atom i starts on candidate ``i mod n_candidates`` with a little random mass
        elsewhere (so repeated candidates differ); encoder rows along the atoms."""
        n, m = self.config.n_concepts, self.config.n_candidates
        anchor = torch.zeros(n, m)
        anchor[torch.arange(n), torch.arange(n) % m] = 1.0
        self.W.copy_(anchor + 0.05 * torch.rand(n, m) / m)
        self.Lambda.zero_()
        self.multiplier.zero_()
        self._fused = None
        self.constrain_()
        atoms = self._compute_dictionary()
        # Encoder rows along the atoms, scaled by 1 / (k |atom|^2): a token near an atom gets a
        # code near 1 / k, so the k active atoms start by reconstructing it at its own scale.
        # (Unit rows would give codes near |x|: with atoms of data norm the first reconstructions
        # are about k |x| too long, and training diverges on tokens of large norm.)
        self.W_enc.copy_(atoms / (atoms.square().sum(dim=-1, keepdim=True).clamp_min(1e-12) * self.config.k))
        self.b_enc.zero_()
        self.b_dec.zero_()

    def _compute_dictionary(self) -> Tensor:
        return (self.W @ self.C + self.Lambda) * self.multiplier.exp()

    @property
    def dictionary(self) -> Tensor:
        """``(W C + Lambda) exp(multiplier)``; the cached fused copy in eval mode."""
        if not self.training and self._fused is not None:
            return self._fused
        return self._compute_dictionary()

    @torch.no_grad()
    def fuse(self) -> Tensor:
        """Compute the dictionary once and cache it for inference (eval mode)."""
        self._fused = self._compute_dictionary().detach()
        return self._fused

    def train(self, mode: bool = True) -> RASAE:
        super().train(mode)
        if mode:
            self._fused = None
        else:
            self.fuse()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if not self.training:
            self.fuse()
        return result

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project W onto row-stochastic matrices and Lambda into the delta-ball."""
        self.W.copy_(row_stochastic(self.W))
        self.Lambda.copy_(clip_rows(self.Lambda, self.config.delta))
        if not self.training:
            self.fuse()

    def _sparsify(self, pre_codes: Tensor, inplace: bool = False) -> Tensor:
        if self.config.sparsity == "topk":
            return topk_codes(pre_codes, self.config.k, inplace=inplace)
        return super()._sparsify(pre_codes, inplace=inplace)


def row_stochastic(weights: Tensor) -> Tensor:
    """ReLU then normalise each row to sum 1 (the library's projection of W);
    a row with no positive entry becomes uniform."""
    weights = weights.clamp_min(0.0)
    mass = weights.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(weights, 1.0 / weights.shape[-1])
    return torch.where(mass > 0, weights / mass.clamp_min(1e-30), uniform)


def clip_rows(relax: Tensor, delta: float) -> Tensor:
    """Rescale rows longer than ``delta`` onto the ``delta``-sphere."""
    norms = relax.norm(dim=-1, keepdim=True)
    return relax * (delta / norms.clamp_min(1e-30)).clamp(max=1.0)


def kmeans_candidates(
    tokens: Tensor,
    n_candidates: int,
    iters: int = 25,
    seed: int = 0,
    *,
    max_points: int = 200_000,
    chunk: int = 16_384,
) -> Tensor:
    """K-means centroids of ``tokens`` (any shape ``(..., dim)``), the RA-SAE candidates.

    Lloyd's algorithm in torch on the tokens' device: random distinct points as the
    initial centroids (seeded), assignment by chunked ``||x||^2 - 2 x.c + ||c||^2``
    argmin, update by ``index_add_``; an empty cluster is re-seeded on a random point.
    At most ``max_points`` tokens (a seeded random subset) are used.
    """
    check_int("n_candidates", n_candidates, 1)
    check_int("iters", iters, 0)
    points = tokens.reshape(-1, tokens.shape[-1]).float()
    generator = torch.Generator().manual_seed(seed)
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_points].to(points.device)]
    n = points.shape[0]
    if n_candidates > n:
        raise ConfigError(f"k-means needs at least n_candidates={n_candidates} tokens, got {n}")
    if not bool(torch.isfinite(points).all()):
        raise ConfigError("k-means tokens contain NaN or infinite values")
    start = torch.randperm(n, generator=generator)[:n_candidates].to(points.device)
    centroids = points[start].clone()
    point_sq = points.square().sum(dim=-1)
    for _ in range(iters):
        assign = _nearest(points, point_sq, centroids, chunk)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_candidates)
        empty = counts == 0
        centroids = sums / counts.clamp_min(1).unsqueeze(-1).to(sums.dtype)
        n_empty = int(empty.sum())
        if n_empty:
            reseed = torch.randint(0, n, (n_empty,), generator=generator).to(points.device)
            centroids[empty] = points[reseed]
    return centroids


def _nearest(points: Tensor, point_sq: Tensor, centroids: Tensor, chunk: int) -> Tensor:
    centroid_sq = centroids.square().sum(dim=-1)
    parts = []
    for start in range(0, points.shape[0], chunk):  # chunks of tokens, bounded memory
        block = points[start : start + chunk]
        dist = point_sq[start : start + chunk, None] - 2.0 * block @ centroids.t() + centroid_sq
        parts.append(dist.argmin(dim=-1))
    return torch.cat(parts)
