"""Capture a generator's internal activations during generation (the internal lens's input).

RAIGen (seed 000; DESIGN.md section 2, internal lens): hook the denoiser's
bottleneck (U-Net: ``unet.mid_block``; FLUX: ``transformer.transformer_blocks.18``,
image stream), at the last denoising step by default, keep only the conditional half
of a classifier-free-guidance batch, and treat every spatial position as one sample.
Hook points are named by their dotted module path from the pipeline
(``unet.mid_block``), as TransformerLens names its hook points. Hooks are added in a
context manager and always removed in ``finally``, whatever happens inside.

Layout of the batch under guidance is decided from the guidance setting
(``guided=True``: the denoiser sees ``[uncond, cond]``, diffusers' convention), never
from the parity of the batch. Steps are counted by a pre-hook on the denoiser (the
first component of the hook path): call k of the denoiser is denoising step k. That
holds for pipelines that run the guided batch in one denoiser call per step (Stable
Diffusion, PixArt, SDXL, FLUX, the world model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from precompute.errors import ConfigError

UNET_POINT = "unet.mid_block"
TRANSFORMER_BLOCK = 18  # RAIGen's FLUX hook: transformer_blocks.18, the last of FLUX.1's 19 double-stream blocks


def default_point(pipeline: Any) -> str:
    """The architecture's hook point for ``capture = ["auto"]``.

    U-Nets: ``unet.mid_block``, the bottleneck. Transformers (FLUX, PixArt):
    ``transformer.transformer_blocks.18`` (FLUX's image stream, RAIGen), or the last
    block of a model with fewer than 19 (a smaller FLUX's last double-stream block).
    """
    if getattr(pipeline, "unet", None) is not None:
        return UNET_POINT
    blocks = getattr(getattr(pipeline, "transformer", None), "transformer_blocks", None)
    if blocks is not None and len(blocks) > 0:
        return f"transformer.transformer_blocks.{min(TRANSFORMER_BLOCK, len(blocks) - 1)}"
    raise ConfigError(f"{type(pipeline).__name__} has neither a unet nor transformer blocks; name capture points "
                      "explicitly")


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture: hook points, denoising steps (negative counts from the end), guidance layout."""

    points: tuple[str, ...]
    steps: tuple[int, ...]
    num_inference_steps: int
    guided: bool
    output_index: int | None = None  # element of a tuple output; None: the last (FLUX blocks: the image stream)

    def __post_init__(self) -> None:
        if not self.points or any(not p or p.startswith(".") or p.endswith(".") for p in self.points):
            raise ConfigError(f"capture points must be dotted module paths like 'unet.mid_block', got {self.points!r}")
        if self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        bad = [s for s in self.steps if not -self.num_inference_steps <= s < self.num_inference_steps]
        if not self.steps or bad:
            raise ConfigError(f"capture_steps must be in [-{self.num_inference_steps}, "
                              f"{self.num_inference_steps - 1}] for {self.num_inference_steps} steps, got {self.steps!r}")

    def step_indices(self) -> tuple[int, ...]:
        """The wanted steps as non-negative indices, sorted, without repeats."""
        return tuple(sorted({s % self.num_inference_steps for s in self.steps}))


def resolve_module(root: Any, path: str) -> torch.nn.Module:
    """The module at dotted ``path`` under a pipeline (first part: a component) or a module."""
    head, _, rest = path.partition(".")
    component = getattr(root, head, None)
    if not isinstance(component, torch.nn.Module):
        raise ConfigError(f"capture point {path!r}: {type(root).__name__} has no module {head!r}")
    try:
        return component.get_submodule(rest) if rest else component
    except AttributeError:
        raise ConfigError(f"capture point {path!r}: {head} has no submodule {rest!r}") from None


def to_positions(output: Any, output_index: int | None) -> torch.Tensor:
    """A hooked output as (batch, positions, channels): U-Net maps (B, C, H, W) or token streams (B, T, C)."""
    if isinstance(output, (tuple, list)):
        output = output[-1 if output_index is None else output_index]
    elif hasattr(output, "sample"):
        output = output.sample
    if not isinstance(output, torch.Tensor) or output.ndim not in (3, 4):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ConfigError(f"captured output must be (B, C, H, W) or (B, T, C), got {shape}")
    if output.ndim == 4:  # (B, C, H, W) -> (B, H*W, C): every spatial position is one sample
        return output.flatten(2).transpose(1, 2)
    return output


class ActivationCaptureHook:
    """Forward hook of one point: keeps the conditional half's (B, P, C) activations at the wanted steps."""

    def __init__(self, point: str, config: CaptureConfig, counter: list[int]):
        self.point = point
        self.config = config
        self.counter = counter  # shared one-element step counter, advanced by the denoiser pre-hook
        self.wanted = set(config.step_indices())
        self.records: dict[int, torch.Tensor] = {}

    def __call__(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        step = self.counter[0] - 1
        if step not in self.wanted:
            return
        positions = to_positions(output, self.config.output_index).detach()
        if self.config.guided:  # [uncond, cond]: keep the second half, the conditional one
            if positions.shape[0] % 2:
                raise RuntimeError(f"{self.point}: guided batch of odd size {positions.shape[0]}")
            positions = positions[positions.shape[0] // 2:]
        self.records[step] = positions.float().cpu()


class CaptureRecorder:
    """The hooks of one ``apply_capture`` block; ``take()`` returns and clears one call's activations."""

    def __init__(self, hooks: list[ActivationCaptureHook], counter: list[int]):
        self.hooks = hooks
        self.counter = counter

    def take(self) -> dict[tuple[str, int], torch.Tensor]:
        """{(point, step): (batch, positions, channels) float32} of the last pipeline call; resets the counter."""
        found = {}
        for hook in self.hooks:
            missing = hook.wanted - set(hook.records)
            if missing:
                raise RuntimeError(f"{hook.point}: no activation at step(s) {sorted(missing)} "
                                   f"(the denoiser ran {self.counter[0]} times)")
            found.update({(hook.point, step): tensor for step, tensor in hook.records.items()})
        self.reset()
        return found

    def reset(self) -> None:
        """Forget a call's partial records (after an error, e.g. out of memory)."""
        self.counter[0] = 0
        for hook in self.hooks:
            hook.records.clear()


def count_denoising_steps(module: Any, point: str, counter: list[int]) -> Any:
    """Advance ``counter[0]`` before every call of the denoiser that holds ``point`` (its first component, as
    ``unet`` of ``unet.mid_block``): call k is denoising step k (module docstring). The hook's handle."""
    denoiser = resolve_module(module, point.split(".")[0])
    return denoiser.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))


@contextmanager
def apply_capture(module: Any, config: CaptureConfig) -> Iterator[CaptureRecorder]:
    """Hook ``config.points`` under ``module`` (a pipeline or a module) for the block; always unhooked."""
    targets = [(point, resolve_module(module, point)) for point in config.points]
    counter = [0]
    hooks = [ActivationCaptureHook(point, config, counter) for point, _ in targets]
    handles = []
    try:
        handles.append(count_denoising_steps(module, config.points[0], counter))
        for hook, (_, target) in zip(hooks, targets):
            handles.append(target.register_forward_hook(hook))
        yield CaptureRecorder(hooks, counter)
    finally:
        for handle in handles:
            handle.remove()


def select_positions(n_positions: int, budget: int | None, seed: int) -> torch.Tensor:
    """Indices of the positions kept for one image: all, or a seeded random subset of ``budget`` (sorted)."""
    if budget is None or n_positions <= budget:
        return torch.arange(n_positions)
    chosen = torch.randperm(n_positions, generator=torch.Generator().manual_seed(seed))[:budget]
    return chosen.sort().values


class CaptureBuffer:
    """Activations of one shard for one (point, step): position samples, per-image means, row -> image."""

    def __init__(self) -> None:
        self.positions: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] = []
        self.image_index: list[torch.Tensor] = []

    def add(self, activations: torch.Tensor, first_image: int, seeds: list[int], budget: int | None) -> None:
        """Add a (batch, P, C) block whose images are ``first_image, first_image + 1, ...`` in the shard."""
        self.pooled.append(activations.mean(dim=1))
        batch, n_positions, _ = activations.shape
        keep = [select_positions(n_positions, budget, seed) for seed in seeds]
        if all(k.numel() == n_positions for k in keep):
            rows = activations.reshape(batch * n_positions, -1)
        else:
            rows = torch.cat([activations[i, k] for i, k in enumerate(keep)])
        counts = torch.tensor([k.numel() for k in keep])
        self.positions.append(rows.to(torch.float16))
        self.image_index.append(torch.repeat_interleave(torch.arange(first_image, first_image + batch), counts))

    def tensors(self, channels: int | None = None) -> dict[str, torch.Tensor]:
        """The shard file's tensors: positions (n, C) fp16, pooled (images, C) fp32, image_index (n,) int64."""
        if not self.pooled:
            width = channels or 0
            return {"positions": torch.zeros(0, width, dtype=torch.float16), "pooled": torch.zeros(0, width),
                    "image_index": torch.zeros(0, dtype=torch.int64)}
        return {"positions": torch.cat(self.positions).contiguous(), "pooled": torch.cat(self.pooled).contiguous(),
                "image_index": torch.cat(self.image_index).to(torch.int64)}
