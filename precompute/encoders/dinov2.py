"""DINOv2 (with or without registers) as an energy model, through transformers.

The blindspots paper (seed 001, section 3 and appendix F.1) encodes each image into
the 261 tokens of ``dinov2_vitb14_reg``: 1 CLS + 4 registers + 16 x 16 patches of a
224 x 224 crop, patch size 14, and feeds all of them to the SAE. We load the same
network as ``Dinov2WithRegistersModel`` (default ``facebook/dinov2-with-registers-base``)
or, as an option, plain ``Dinov2Model`` (1 + 256 tokens).

Preprocessing is DINOv2's evaluation transform: shorter side to 256 (bicubic),
centre crop 224, ImageNet mean/std (see ``preprocess``). The hub configs declare
``image_size = 518`` (the pretraining resolution); the model interpolates its
position embeddings to the 16 x 16 grid of a 224 crop, as the original code does.

Output tokens are ``last_hidden_state``, which in both HF classes is the encoder
output passed through the final ``layernorm`` (``sequence_output =
self.layernorm(encoder_outputs.last_hidden_state)``), i.e. DINOv2's ``x_norm``
tokens: CLS, then the registers, then the patches in row-major order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from precompute.encoders.base import EnergyModel
from precompute.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageBatch, resize_crop_normalise
from precompute.errors import ConfigError

DEFAULT_DINOV2 = "facebook/dinov2-with-registers-base"
DINOV2_MODEL_TYPES = ("dinov2_with_registers", "dinov2")
RESIZE, CROP = 256, 224


class DINOv2Encoder(EnergyModel):
    """DINOv2 tokens: CLS + registers (if any) + patches, final layer norm applied.

    ``source`` is a hub id or a local folder holding a ``dinov2_with_registers`` or
    ``dinov2`` checkpoint; ``resize``/``crop`` default to the paper's 256/224.
    """

    def __init__(
        self,
        source: str | Path = DEFAULT_DINOV2,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        *,
        model_type: str | None = None,
        resize: int = RESIZE,
        crop: int = CROP,
    ):
        super().__init__(device, dtype)
        from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel

        if model_type is None:
            model_type = AutoConfig.from_pretrained(str(source)).model_type
        if model_type not in DINOV2_MODEL_TYPES:
            raise ConfigError(
                f"{source}: expected a DINOv2 checkpoint {DINOV2_MODEL_TYPES}, got model_type {model_type!r}"
            )
        model_class = Dinov2WithRegistersModel if model_type == "dinov2_with_registers" else Dinov2Model
        self.model = model_class.from_pretrained(str(source), dtype=self.dtype).to(self.device).eval()
        config = self.model.config
        if crop % config.patch_size:
            raise ConfigError(f"crop ({crop}) must be a multiple of the patch size ({config.patch_size})")
        if resize < crop:
            raise ConfigError(f"resize ({resize}) must be at least the crop ({crop})")
        self.resize, self.crop = resize, crop
        self.patch_size = int(config.patch_size)
        self.n_registers = int(getattr(config, "num_register_tokens", 0))
        self.name = str(source)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.crop // self.patch_size
        return (side, side)

    @property
    def n_prefix(self) -> int:
        return 1 + self.n_registers

    def preprocess(self, images: ImageBatch) -> Tensor:
        """Shorter side to ``resize`` (bicubic), centre ``crop``, ImageNet mean/std."""
        return resize_crop_normalise(images, self.resize, self.crop, IMAGENET_MEAN, IMAGENET_STD)

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixel_values=pixels).last_hidden_state
