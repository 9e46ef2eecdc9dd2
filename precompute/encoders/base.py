"""The energy-model contract: images in, a grid of tokens out.

The output lens of the blindspots paper (seed 001, section 3, "Defining the Energy
Model") encodes every image into tokens of a frozen vision model, then an SAE into
concepts; the energy of a concept is the sum of its activations over the image's
tokens. Every energy model here (DINOv2 with or without registers, CLIP's vision
tower, the embedded world's encoder) answers one question the same way:
``encode(images) -> Tokens``, with the token layout (which tokens are patches, the
patch grid) carried beside the tensor, so the SAE, the exemplar heatmaps and the
co-occurrence code never special-case a model.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from precompute.encoders.preprocess import ImageBatch
from precompute.errors import ConfigError
from precompute.progress import Advance

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp32"``/``"fp16"``/``"bf16"`` (or the torch dtype itself) -> torch dtype, else ``ConfigError``."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device, or ``ConfigError`` when the name is malformed or the device absent."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device must be a torch device name such as 'cpu' or 'cuda:0', got {device!r}") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for, but MPS is not available on this machine")
    return parsed


@dataclass(frozen=True)
class Tokens:
    """Tokens of a batch of images.

    ``tokens`` is (batch, n_tokens, dim) in the model's dtype on its device, in the
    model's own order (DINOv2 with registers: CLS, 4 registers, then the patches in
    row-major order). ``patch_mask`` (n_tokens,) bool marks the patch tokens;
    ``grid`` is the (rows, cols) shape of the patches, so
    ``tokens[:, patch_mask].reshape(batch, *grid, dim)`` is the spatial map.
    """

    tokens: Tensor
    grid: tuple[int, int]
    patch_mask: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[2])

    def patches(self) -> Tensor:
        """The patch tokens only, as a spatial map (batch, rows, cols, dim)."""
        return self.tokens[:, self.patch_mask.to(self.tokens.device)].reshape(self.batch_size, *self.grid, self.dim)


class EnergyModel(ABC):
    """A frozen vision model seen as ``images -> Tokens``.

    Subclasses set ``name`` and implement ``preprocess`` (images -> (B, 3, H, W)
    float32 pixels on the CPU), ``_forward`` (pixels on the device -> (B, n, dim)
    tokens) and the token layout (``dim``, ``grid``, ``patch_mask``). ``encode``
    is the same for all of them: preprocess, move, run without gradients.
    """

    name: str

    def __init__(self, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32"):
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)

    # -- the layout ---------------------------------------------------------------------

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of one token."""

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid at the model's input resolution."""

    @property
    @abstractmethod
    def n_prefix(self) -> int:
        """How many non-patch tokens (CLS, registers) come before the patches."""

    @property
    def n_tokens(self) -> int:
        """Tokens per image: the prefix tokens plus one per patch."""
        rows, cols = self.grid
        return self.n_prefix + rows * cols

    @property
    def patch_mask(self) -> Tensor:
        """(n_tokens,) bool, True at patch tokens (the prefix tokens come first)."""
        return torch.arange(self.n_tokens) >= self.n_prefix

    @property
    def token_groups(self) -> Tensor | None:
        """(groups, dim) 0/1 masks that split every token into one token per group before the SAE, or None.

        A model whose tokens write independent factors in disjoint coordinates declares them (the world encoder
        read out through its heads: one block of coordinates per concept family), so that the SAE sees one factor
        per token and the codes of a position are the sum over its groups (``split_tokens``, ``Lens.codes``)."""
        return None

    # -- encoding -----------------------------------------------------------------------

    @abstractmethod
    def preprocess(self, images: ImageBatch) -> Tensor:
        """Images -> (B, 3, H, W) float32 pixel batch on the CPU, exactly as the model was trained."""

    @abstractmethod
    def _forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) pixels on the device in the model's dtype -> (B, n_tokens, dim)."""

    def encode(self, images: ImageBatch) -> Tokens:
        """Encode one batch of images (PIL images or uint8 arrays) into tokens.

        The tokens stay on the model's device, in its dtype. They are made under
        ``no_grad`` (not ``inference_mode``) so that code downstream may still use
        them in autograd, e.g. to train an SAE on them directly.
        """
        pixels = self.preprocess(images).to(self.device, self.dtype)
        with torch.no_grad():
            tokens = self._forward(pixels)
        return Tokens(tokens=tokens, grid=self.grid, patch_mask=self.patch_mask)

    def encode_batches(self, images: Iterable, batch_size: int, progress: Advance | None = None) -> Iterator[Tokens]:
        """Encode a (possibly lazy) stream of images ``batch_size`` at a time.

        ``images`` may be a list, a (B, H, W, 3) array or any iterable of single
        images; ``progress(n)`` is called with the number of images of each batch.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        stream = iter(images)
        while chunk := list(itertools.islice(stream, batch_size)):
            tokens = self.encode(chunk)
            if progress is not None:
                progress(len(chunk))
            yield tokens

    def embed(self, images: ImageBatch) -> Tensor:
        """(batch, d) L2-normalised semantic image embeddings for the internal lens.

        RAIGen (seed 000) measures a feature's distinctiveness with image embeddings:
        CLIP's for real images, the world encoder's for the embedded world. Models
        without such an embedding raise ``ConfigError``.
        """
        raise ConfigError(f"{self.name} gives no semantic image embeddings; use a CLIP checkpoint or 'world'")

    def describe(self) -> dict:
        """Plain description of this model, for saving next to its outputs."""
        return {
            "name": self.name,
            "dim": self.dim,
            "n_tokens": self.n_tokens,
            "grid": list(self.grid),
            "n_prefix": self.n_prefix,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, tokens={self.n_tokens}x{self.dim}, "
            f"grid={self.grid}, device={self.device}, dtype={self.dtype})"
        )


def split_tokens(tokens: Tensor, groups: Tensor | None) -> Tensor:
    """(..., dim) tokens -> (..., groups, dim): each token once per group, zero outside the group's coordinates
    (a group axis of one, the tokens as they are, when ``groups`` is None)."""
    if groups is None:
        return tokens.unsqueeze(-2)
    return tokens.unsqueeze(-2) * groups.to(tokens.device, tokens.dtype)


def training_rows(tokens: Tensor, groups: Tensor | None) -> Tensor:
    """(..., dim) tokens -> (n, dim) rows an SAE trains on: the tokens, or with ``groups`` their split (one row per
    token and group), less the rows that are zero (a group a token does not show teaches nothing)."""
    rows = split_tokens(tokens, groups).reshape(-1, tokens.shape[-1])
    return rows if groups is None else rows[rows.abs().amax(dim=1) > 0]
