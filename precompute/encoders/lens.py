"""The output lens: an energy model and the SAE that reads its tokens, checked against each other once.

Images -> energy-model tokens -> SAE codes -> per-image energies, where the energy of
concept k in an image is the sum of its codes over the image's tokens (all tokens, as
the paper's code does, seed 003; patch tokens only with ``patch_tokens_only``), or with
``aggregation = "max"`` the largest code over them. A sum grows with the area a concept
covers: a generator that draws four objects where the data has one raises every shape,
colour and pattern concept of the objects it draws, though no shape is drawn more often
(on the embedded world that made 13 of 19 flags of one randomised generator false, README
"The world lens"); the maximum says whether an image shows the concept. An energy
model with ``token_groups`` (the world encoder's head read-out) has each token split by
group before the SAE and the codes of its groups summed, so a position's codes stay one row. The
encode stage builds one from a run's config (``precompute.stages.encode.open_lens``);
the steering service builds one from the atlas's energy model and SAE, so a steered
image is measured exactly as the atlas's images were.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from precompute.encoders.base import split_tokens
from precompute.errors import ConfigError
from precompute.images import load_images

CODE_CHUNK = 2 ** 24  # codes held densely at once (tokens x concepts), about 64 MB of float32


class Lens:
    """An energy model and an SAE of matching width.

    ``patch_tokens_only``: energies sum the patch tokens alone (else every token);
    ``aggregation``: ``"sum"`` (the paper's) or ``"max"`` over those tokens;
    ``batch_size``: images per energy-model call; ``jpeg_quality``: the JPEG round trip
    images take before the energy model (None: none); ``digest``: the lens's key in a
    work folder ("" where there is none); ``sae_source`` and ``model_name``: how a
    width mismatch names the two.
    """

    def __init__(self, model: Any, sae: Any, patch_tokens_only: bool = False, batch_size: int = 64,
                 jpeg_quality: int | None = None, digest: str = "", sae_source: str = "the output-lens SAE",
                 model_name: str | None = None, aggregation: str = "sum"):
        if sae.input_dim != model.dim:
            raise ConfigError(f"{sae_source} takes tokens of dimension {sae.input_dim}, but the energy "
                              f"model {model_name or model.name!r} gives tokens of dimension {model.dim}")
        self.model = model
        self.sae = sae.eval()
        self.patch_mask = model.patch_mask
        self.patch_only = patch_tokens_only
        if aggregation not in ("sum", "max"):
            raise ConfigError(f"energy aggregation must be 'sum' or 'max', got {aggregation!r}")
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.jpeg_quality = jpeg_quality
        self.digest = digest

    @classmethod
    def from_parts(cls, model: Any, sae: Any, patch_tokens_only: bool, batch_size: int = 64,
                   aggregation: str = "sum") -> Lens:
        """A lens from a loaded energy model and SAE, without a JPEG round trip or a work-folder key."""
        return cls(model, sae, patch_tokens_only, batch_size, aggregation=aggregation)

    @property
    def n_concepts(self) -> int:
        return self.sae.n_concepts

    def energy(self, codes: torch.Tensor) -> torch.Tensor:
        """(b, tokens, K) codes -> (b, K) energies: the sum over all tokens (the paper's code), or patches only;
        the maximum instead with ``aggregation = "max"``."""
        picked = codes[:, self.patch_mask] if self.patch_only else codes
        return picked.amax(1) if self.aggregation == "max" else picked.sum(1)

    def energies(self, paths: list[Path]) -> torch.Tensor:
        """(images, K) energies of image files, as the encode stage computes them."""
        energy = torch.zeros(len(paths), self.n_concepts)
        for first, codes in self.codes(paths):
            energy[first:first + codes.shape[0]] = self.energy(codes)
        return energy

    def codes(self, paths: list[Path]) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first image index, codes (b, tokens, K) float32 on CPU) over ``paths`` in small chunks."""
        groups = self.model.token_groups
        per_image = max(1, CODE_CHUNK // (self.model.n_tokens * (1 if groups is None else len(groups))
                                          * self.n_concepts))
        for start in range(0, len(paths), self.batch_size):
            tokens = self.model.encode(load_images(paths[start:start + self.batch_size], self.jpeg_quality)).tokens
            for offset in range(0, tokens.shape[0], per_image):
                yield start + offset, self.token_codes(tokens[offset:offset + per_image]).float().cpu()

    def token_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(b, tokens, dim) energy-model tokens -> (b, tokens, K) codes; a model with ``token_groups`` has each
        token split by group, encoded, and its groups' codes summed (``precompute.encoders.base.split_tokens``)."""
        tokens = tokens.to(self.sae.W_enc.dtype)
        groups = self.model.token_groups
        if groups is None:
            return self.sae.encode_codes(tokens)
        return self.sae.encode_codes(split_tokens(tokens, groups)).sum(dim=-2)
