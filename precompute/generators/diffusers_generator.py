"""Run a loaded text-to-image pipeline over captions: seeds, batching, OOM fallback, flags, capture.

DESIGN.md section 4 (generate) and seed 001 appendix D.2: one image per caption with
the pipeline's standard call and the configured steps, guidance and size. Each image
gets its own ``torch.Generator`` seeded from (generator, item), so the same item gives
the same bytes whatever the batch. Out of memory halves the batch (down to one
image); an image that fails alone is skipped with the reason, and the run goes on.
An all-black image (what a safety filter returns) is flagged ``black``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from precompute.generators.capture import CaptureBuffer, CaptureConfig, apply_capture
from precompute.generators.seeding import item_generators, item_seed

log = logging.getLogger(__name__)

BLACK = "black"


@dataclass(frozen=True)
class Skipped:
    """An item the generator could not make; the stage records it and goes on."""

    reason: str
    detail: str = ""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA (or other accelerator) out-of-memory, as torch raises it."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(error, oom)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def is_black(image: Image.Image) -> bool:
    """True for an image with no non-zero pixel (a safety filter's replacement)."""
    return not np.asarray(image).any()


@dataclass
class PipelineGenerator:
    """``generate(captions, item_ids)`` over one pipeline; optional activation capture into per-shard buffers.

    ``call_kwargs`` are passed to every pipeline call (steps, guidance, size,
    negative prompt); ``resize`` makes every image that size (bicubic), for models
    that generate smaller than the real images they are compared to.
    """

    pipeline: Callable[..., Any]
    name: str
    seed: int
    call_kwargs: dict[str, Any]
    batch_size: int
    device: str = "cpu"
    resize: tuple[int, int] | None = None
    capture: CaptureConfig | None = None
    capture_budget: int | None = None
    setup: dict[str, Any] = field(default_factory=dict)  # how the pipeline was loaded, for the manifest
    buffers: dict[tuple[str, int], CaptureBuffer] = field(default_factory=dict)
    images_in_shard: int = 0
    oom_events: int = 0

    def __call__(self, captions: list[str], item_ids: list[str]) -> list[tuple | Skipped]:
        seeds = [item_seed(self.name, self.seed, item_id) for item_id in item_ids]
        results: list[tuple | Skipped] = []
        size, start = max(1, min(self.batch_size, len(captions))), 0
        while start < len(captions):
            chunk = slice(start, start + size)
            try:
                made = self._call(captions[chunk], item_ids[chunk], seeds[chunk])
            except Exception as error:  # only out-of-memory is handled; anything else is a bug to see
                if not is_out_of_memory(error):
                    raise
                self.oom_events += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if size > 1:
                    size //= 2
                    log.warning("%s: out of memory, batch size now %d", self.name, size)
                    continue
                made = [Skipped("out-of-memory", f"out of memory even alone: {str(error)[:300]}")]
            results.extend(made)
            start += len(made)
        return results

    def _call(self, captions: list[str], item_ids: list[str], seeds: list[int]) -> list[tuple]:
        generators = item_generators(seeds)  # CPU generators: the same noise on any device
        kwargs = {"prompt": captions, "generator": generators, **self.call_kwargs}
        if self.capture is None:
            output = self.pipeline(**kwargs)
            captured = {}
        else:
            with apply_capture(self.pipeline, self.capture) as recorder:
                try:
                    output = self.pipeline(**kwargs)
                    captured = recorder.take()
                finally:
                    recorder.reset()
        images = list(output.images)
        if self.resize is not None:
            images = [im if im.size == self.resize else im.resize(self.resize, Image.BICUBIC) for im in images]
        images = [im.convert("RGB") for im in images]
        nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(images)
        for (point, step), activations in captured.items():
            salted = [item_seed(self.name, self.seed, item_id, f"{point}@{step}") for item_id in item_ids]
            buffer = self.buffers.setdefault((point, step), CaptureBuffer())
            buffer.add(activations, self.images_in_shard, salted, self.capture_budget)
        self.images_in_shard += len(images)
        return [(image, (), BLACK if (flagged or is_black(image)) else None) for image, flagged in zip(images, nsfw)]

    def drain_capture(self) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
        """The shard's captured tensors per (point, step), and a fresh start for the next shard."""
        drained = {key: buffer.tensors() for key, buffer in self.buffers.items()}
        if self.capture is not None:
            for point in self.capture.points:
                for step in self.capture.step_indices():
                    drained.setdefault((point, step), CaptureBuffer().tensors())
        self.buffers, self.images_in_shard = {}, 0
        return drained
