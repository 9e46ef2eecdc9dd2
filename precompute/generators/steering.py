"""Steer a generator through its internal SAE: scale chosen features (or add their directions) during denoising.

DiffLens (seed 002, "Bias Feature Scaling Control") scales the k-SAE features of the
U-Net bottleneck and decodes back into the latent; DESIGN.md section 2 (control)
generalises it so that the SAE's reconstruction error is kept:

- ``mode="scale"``: ``h <- h + D(z') - D(z)``, where ``z = SAE.encode(h)`` and ``z'``
  equals ``z`` except that each chosen feature is multiplied by ``1 + strength``
  (strength 0 leaves it, -1 removes it, 2 triples it). The decoder is affine,
  ``D(z) = z W + b``, so ``D(z') - D(z) = sum_f strength_f * z_f * W_f`` exactly: the
  bias and every other feature cancel, and strength 0 changes nothing at all (the
  image is byte-identical to an unhooked run).
- ``mode="add"``: ``h <- h + sum_f strength_f * d_f`` with ``d_f = W_f / ||W_f||``, the
  feature's unit decoder direction, at every position: for a feature the image does
  not express, where scaling has nothing to scale. Strengths are in activation units
  (the world model's bottleneck vectors have norm 13-16).

The SAE reads the channel vector of every spatial position: a U-Net map (B, C, H, W)
is seen as B*H*W samples of C channels, a token stream (B, T, C) as B*T samples, as
the internal lens trained it (``capture.to_positions``). Options: a half-open range of
denoising steps, and under classifier-free guidance the conditional half only (the
second half of the ``[uncond, cond]`` batch, diffusers' layout) or both halves. Steps
are counted by a pre-hook on the denoiser, as in ``capture``: call k of the denoiser
is denoising step k. Hooks are added in a context manager and removed in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from precompute.errors import ConfigError
from precompute.generators.capture import count_denoising_steps, resolve_module

MODES = ("scale", "add")


@dataclass(frozen=True)
class FeatureEdit:
    """One feature of the internal SAE and its signed strength (meaning set by the mode)."""

    feature: int
    strength: float

    def __post_init__(self) -> None:
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or self.feature < 0:
            raise ConfigError(f"a steered feature must be an integer id >= 0, got {self.feature!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) \
                or not math.isfinite(self.strength):
            raise ConfigError(f"feature {self.feature}: strength must be a finite number, got {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))


@dataclass(frozen=True)
class SteeringConfig:
    """Where and how to steer.

    ``point``: the hooked module by dotted path from the pipeline (``unet.mid_block``),
    whose output the internal SAE was trained on. ``steps``: ``(start, stop)``, the
    denoising steps ``start <= k < stop`` that are steered; None: all. ``guided``: the
    denoiser sees ``[uncond, cond]`` (guidance > 1); ``conditional_only``: steer only
    the conditional half then. ``output_index``: element of a tuple output (None: the
    last, FLUX blocks' image stream).
    """

    point: str
    edits: tuple[FeatureEdit, ...]
    mode: str = "scale"
    steps: tuple[int, int] | None = None
    guided: bool = True
    conditional_only: bool = True
    output_index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.point, str) or not self.point or self.point.startswith(".") or self.point.endswith("."):
            raise ConfigError(f"steering point must be a dotted module path like 'unet.mid_block', got {self.point!r}")
        edits = tuple(self.edits)
        if not edits or not all(isinstance(e, FeatureEdit) for e in edits):
            raise ConfigError(f"steering needs at least one FeatureEdit, got {self.edits!r}")
        features = [e.feature for e in edits]
        if len(set(features)) != len(features):
            raise ConfigError(f"each feature may be steered once; repeated in {features}")
        object.__setattr__(self, "edits", edits)
        if self.mode not in MODES:
            raise ConfigError(f"steering mode must be one of {MODES}, got {self.mode!r}")
        if self.steps is not None:
            steps = tuple(self.steps)
            if len(steps) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps) \
                    or not 0 <= steps[0] < steps[1]:
                raise ConfigError(f"steps must be (start, stop) with 0 <= start < stop, got {self.steps!r}")
            object.__setattr__(self, "steps", steps)

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(e.feature for e in self.edits)

    def is_steered(self, step: int) -> bool:
        return self.steps is None or self.steps[0] <= step < self.steps[1]


def _select(output: Any, output_index: int | None) -> Tensor:
    if isinstance(output, (tuple, list)):
        output = output[-1 if output_index is None else output_index]
    elif hasattr(output, "sample"):
        output = output.sample
    if not isinstance(output, Tensor) or output.ndim not in (3, 4):
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ConfigError(f"a steered output must be (B, C, H, W) or (B, T, C), got {shape}")
    return output


def _replace(output: Any, steered: Tensor, output_index: int | None) -> Any:
    if isinstance(output, (tuple, list)):
        parts = list(output)
        parts[-1 if output_index is None else output_index] = steered
        return type(output)(parts) if isinstance(output, tuple) else parts
    if hasattr(output, "sample"):
        output.sample = steered
        return output
    return steered


class SteeringHook:
    """Forward hook of the steered point; ``steered_steps`` lists the denoising steps it changed."""

    def __init__(self, sae: Any, config: SteeringConfig):
        n_concepts = sae.n_concepts
        unknown = [f for f in config.features if f >= n_concepts]
        if unknown:
            raise ConfigError(f"feature(s) {unknown} do not exist: the internal SAE has features 0..{n_concepts - 1}")
        self.sae = sae
        self.config = config
        self.counter = [0]  # denoiser calls so far, advanced by the denoiser pre-hook
        self.steered_steps: list[int] = []
        self.index = torch.tensor(config.features, dtype=torch.long, device=sae.b_dec.device)
        with torch.no_grad():
            atoms = sae.dictionary[self.index].detach()  # (m, C), once: a structured dictionary costs to compute
        strengths = torch.tensor([e.strength for e in config.edits], dtype=atoms.dtype, device=atoms.device)
        if config.mode == "scale":
            self.weighted_atoms: Tensor | None = strengths[:, None] * atoms  # D(z') - D(z) = z[:, index] @ this
            self.offset: Tensor | None = None
        else:
            self.weighted_atoms = None
            self.offset = strengths @ (atoms / atoms.norm(dim=-1, keepdim=True).clamp_min(1e-12))  # (C,)

    def delta(self, positions: Tensor) -> Tensor:
        """The change of (n, C) channel vectors: ``D(z') - D(z)`` (scale) or ``sum_f a_f d_f`` (add)."""
        if positions.shape[-1] != self.sae.input_dim:
            raise ConfigError(f"{self.config.point} has {positions.shape[-1]} channels but the internal SAE reads "
                              f"{self.sae.input_dim}; was the SAE trained at another hook point?")
        if self.offset is not None:
            return self.offset.to(positions.dtype).expand_as(positions)
        with torch.no_grad():
            codes = self.sae.encode_codes(positions)[:, self.index]  # (n, m), by the variant's own sparsity rule
        return (codes @ self.weighted_atoms).to(positions.dtype)

    def steer(self, activations: Tensor) -> Tensor:
        """A steered copy of one hooked tensor, (B, C, H, W) or (B, T, C)."""
        batch = activations.shape[0]
        first = 0
        if self.config.guided and self.config.conditional_only:
            if batch % 2:
                raise RuntimeError(f"{self.config.point}: guided batch of odd size {batch}")
            first = batch // 2  # [uncond, cond]: the conditional half is the second
        part = activations[first:]
        if activations.ndim == 4:  # (b, C, H, W) -> (b*H*W, C): every spatial position is one sample
            b, channels, height, width = part.shape
            flat = part.permute(0, 2, 3, 1).reshape(-1, channels)
            change = self.delta(flat).reshape(b, height, width, channels).permute(0, 3, 1, 2)
        else:
            change = self.delta(part.reshape(-1, part.shape[-1])).reshape(part.shape)
        steered = activations.clone()
        steered[first:] = part + change
        return steered

    def __call__(self, module: torch.nn.Module, inputs: Any, output: Any) -> Any:
        step = self.counter[0] - 1
        if not self.config.is_steered(step):
            return None
        self.steered_steps.append(step)
        return _replace(output, self.steer(_select(output, self.config.output_index)), self.config.output_index)


@contextmanager
def apply_steering(module: Any, sae: Any, config: SteeringConfig) -> Iterator[SteeringHook]:
    """Steer ``config.point`` under ``module`` (a pipeline or a module) with ``sae`` for the block.

    The hooks are removed when the block ends, whatever happens inside it. A hook
    object is made per block, so its step counter starts at 0 for the block's first
    denoiser call: use one block per pipeline call.
    """
    target = resolve_module(module, config.point)
    hook = SteeringHook(sae, config)
    handles = []
    try:
        handles.append(count_denoising_steps(module, config.point, hook.counter))
        handles.append(target.register_forward_hook(hook))
        yield hook
    finally:
        for handle in handles:
            handle.remove()
