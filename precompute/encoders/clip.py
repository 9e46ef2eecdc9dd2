"""CLIP's vision tower as an energy model, and CLIP image embeddings for the internal lens.

Tokens: CLS + patches of ``CLIPVisionModel``. HF returns the encoder output before
CLIP's ``post_layernorm`` and applies that layer norm to the CLS token only (to
make ``pooler_output``). We apply ``post_layernorm`` to every token: the tokens then
live in one normalised space, like DINOv2's ``x_norm`` tokens, and the CLS token we
return is exactly the one CLIP projects into its joint embedding space.

Embeddings: RAIGen (seed 000) measures a feature's distinctiveness with CLIP image
embeddings; ``clip_image_embeddings`` returns ``visual_projection(pooler_output)``,
L2-normalised (as ``CLIPModel`` normalises before its similarity logits). It needs a
checkpoint with the projection: a full ``CLIPModel`` or a
``CLIPVisionModelWithProjection``.

Preprocessing is CLIP's: shorter side to the model's ``image_size`` (224 for
ViT-B/32, B/16, L/14) bicubic, centre crop, CLIP mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from precompute.encoders.base import EnergyModel
from precompute.encoders.preprocess import CLIP_MEAN, CLIP_STD, ImageBatch, resize_crop_normalise
from precompute.errors import ConfigError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")


class CLIPEncoder(EnergyModel):
    """CLIP vision tokens (CLS + patches, post-layernorm on all) and projected image embeddings.

    ``source`` is a hub id or a local folder of a ``CLIPModel`` (``model_type``
    ``clip``: only the vision tower and the projection are loaded) or of a
    ``CLIPVisionModel``/``CLIPVisionModelWithProjection`` (``clip_vision_model``).
    """

    def __init__(
        self,
        source: str | Path = DEFAULT_CLIP,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        *,
        config=None,
    ):
        super().__init__(device, dtype)
        from transformers import AutoConfig, CLIPVisionModel, CLIPVisionModelWithProjection

        config = config if config is not None else AutoConfig.from_pretrained(str(source))
        if config.model_type not in CLIP_MODEL_TYPES:
            raise ConfigError(
                f"{source}: expected a CLIP checkpoint {CLIP_MODEL_TYPES}, got model_type {config.model_type!r}"
            )
        if config.model_type == "clip":
            # the full model's vision config lacks the projection width; carry it over
            vision_config = config.vision_config
            vision_config.projection_dim = config.projection_dim
            with_projection = True
        else:
            vision_config = config
            with_projection = "CLIPVisionModelWithProjection" in (config.architectures or ())
        model_class = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
        model = model_class.from_pretrained(str(source), config=vision_config, dtype=self.dtype)
        model = model.to(self.device).eval()
        self.vision = model.vision_model if with_projection else model
        self.projection = model.visual_projection if with_projection else None
        self._model = model
        self.patch_size = int(vision_config.patch_size)
        self.image_size = int(vision_config.image_size)
        self.name = str(source)

    @property
    def dim(self) -> int:
        return int(self.vision.config.hidden_size)

    @property
    def projection_dim(self) -> int | None:
        """Width of ``clip_image_embeddings``; ``None`` when the checkpoint has no projection."""
        return None if self.projection is None else int(self.projection.out_features)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return (side, side)

    @property
    def n_prefix(self) -> int:
        return 1

    def preprocess(self, images: ImageBatch) -> Tensor:
        """Shorter side to ``image_size`` (bicubic), centre crop, CLIP mean/std."""
        return resize_crop_normalise(images, self.image_size, self.image_size, CLIP_MEAN, CLIP_STD)

    def _forward(self, pixels: Tensor) -> Tensor:
        hidden = self.vision(pixel_values=pixels).last_hidden_state
        return self.vision.post_layernorm(hidden)

    def clip_image_embeddings(self, images: ImageBatch) -> Tensor:
        """(batch, projection_dim) L2-normalised CLIP image embeddings, float32 on the device."""
        if self.projection is None:
            raise ConfigError(
                f"{self.name} is a CLIP vision tower without the visual projection; image embeddings need "
                "a CLIPModel or CLIPVisionModelWithProjection checkpoint"
            )
        pixels = self.preprocess(images).to(self.device, self.dtype)
        with torch.no_grad():
            pooled = self.vision(pixel_values=pixels).pooler_output
            embeds = self.projection(pooled)
        return F.normalize(embeds.float(), dim=-1)

    def embed(self, images: ImageBatch) -> Tensor:
        return self.clip_image_embeddings(images)
