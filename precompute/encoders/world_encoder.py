"""The world encoder: the embedded world's energy model, a small ViT that tokenises like DINOv2.

Real DINOv2 weights cannot be fetched on our machines, yet the output lens needs an
energy model whose tokens linearly encode the concepts behind an image (seed 001,
section 3: the SAE recovers concepts that the energy model lays out along roughly
linear directions). For the embedded world (DESIGN section 6) the project trains and
ships this one:

- input: a 64 x 64 RGB world image (other sizes are resized, bicubic), scaled to
  [-1, 1];
- a hybrid ViT (Dosovitskiy et al. 2021, section 3.1 "Hybrid Architecture"): a small
  ResNet stem (per stage a 3 x 3 stride-2 convolution, batch norm, GELU and one
  residual block; three stages, 64 -> 8) whose 8 x 8 feature map is projected
  (1 x 1) into patch embeddings. In our runs a ViT with a plain convolutional stem
  (no normalisation, no residuals) learned colours and backgrounds but not shape,
  count or position within 15 CPU-minutes; with the ResNet stem they are learned
  after a few hundred steps, and every patch token gets the local texture and
  outline (wood grain, stripes, corners) it must encode;
- a CLS token, learned position embeddings, ``depth`` pre-norm transformer blocks
  and a final layer norm, so the output reads like DINOv2's ``x_norm`` tokens:
  1 CLS + 8 x 8 = 65 tokens, patches row-major, ``grid = (8, 8)``.

It is plain torch rather than a tiny transformers ViT because transformers' ViT and
DINOv2 classes have no hybrid stem, and a 200-line module with its own
``config.json`` + ``model.safetensors`` is easier to audit than a remote-code model.
The training objective (supervised by the world's ground truth, not
self-supervised) lives in ``train_world_encoder``; the heads it trains ship with the
weights so the concept read-out can be checked (``concept_logits``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from precompute.encoders.base import EnergyModel
from precompute.encoders.preprocess import ImageBatch, as_pil_list
from precompute.errors import ConfigError
from precompute.fileio import write_text_atomic
from precompute.linalg import random_orthogonal
from precompute.world.concepts import CONCEPTS, EXTRAS, FAMILY_MEMBERS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "blindspot_world_encoder"
#: where the shipped weights live (``load_energy_model("world")``)
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "world-encoder"
#: the output-lens SAE trained on its tokens (``encode.sae = "world"``; see ``train_world_lens``)
SHIPPED_SAE = Path(__file__).parent / "weights" / "world-sae"
#: the SAE trained on the heads' tokens, one token per concept family (``encode.sae = "world-heads"``)
SHIPPED_HEADS_SAE = Path(__file__).parent / "weights" / "world-heads-sae"
READOUTS = ("trunk", "heads")


def _default_families() -> dict[str, list[str]]:
    return {family: list(FAMILY_MEMBERS[family]) for family in ("shape", "colour", "pattern", "background")}


@dataclass(frozen=True)
class WorldEncoderConfig:
    """Shape of the network and the names its heads predict; saved as ``config.json``.

    ``concepts`` are the image-level targets (every world concept, extras and
    background included); ``patch_families`` the per-patch classes (shape, colour,
    pattern at object patches; background at background patches); ``patch_extras``
    the extras whose per-patch coverage is predicted. ``factor_depth > 0`` adds the
    factor read-out: that many transformer blocks and a linear map on top of the trunk,
    trained to write every token as the sum of fixed orthonormal concept directions
    (``concept_basis``, drawn with ``basis_seed``) weighted by how much of the patch each
    concept covers (``factor_weights``); the model's tokens are then the read-out's.
    """

    image_size: int = 64
    patch_size: int = 8
    dim: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    stem_channels: tuple[int, ...] = (32, 64, 128)
    stem_blocks: int = 1
    concepts: list[str] = field(default_factory=lambda: [c.name for c in CONCEPTS])
    patch_families: dict[str, list[str]] = field(default_factory=_default_families)
    patch_extras: list[str] = field(default_factory=lambda: list(EXTRAS))
    factor_depth: int = 0
    basis_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        if self.factor_depth and len(self.concepts) > self.dim:
            raise ConfigError(f"factor tokens need dim >= the number of concepts ({len(self.concepts)}), got {self.dim}")
        for name in ("image_size", "patch_size", "dim", "depth", "heads", "mlp_ratio", "stem_blocks", "factor_depth"):
            value = getattr(self, name)
            minimum = 0 if name in ("stem_blocks", "factor_depth") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"world encoder {name} must be an integer >= {minimum}, got {value!r}")
        if self.dim % self.heads:
            raise ConfigError(f"world encoder dim ({self.dim}) must be divisible by heads ({self.heads})")
        if 2 ** len(self.stem_channels) != self.patch_size:
            raise ConfigError(
                f"the stem halves the image once per stage: {len(self.stem_channels)} stages "
                f"make patches of {2 ** len(self.stem_channels)}, but patch_size is {self.patch_size}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")

    @property
    def side(self) -> int:
        """Patches per side of the grid."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self), "stem_channels": list(self.stem_channels)}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> WorldEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known - {"model_type"})
        if unknown:
            raise ConfigError(f"world encoder config has unknown keys {unknown}; expected {sorted(known)}")
        return cls(**{k: v for k, v in document.items() if k in known})


def _downsample(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution: 3x3 stride-2 convolution, batch norm, GELU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class ResidualBlock(nn.Module):
    """ResNet basic block at constant width: ``gelu(x + bn(conv(gelu(bn(conv(x))))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        return F.gelu(x + self.norm2(self.conv2(F.gelu(self.norm1(self.conv1(x))))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:  # (B, n, dim)
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, n, dim / heads)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class WorldEncoder(nn.Module):
    """The network: stem -> CLS + position embeddings -> blocks -> final layer norm (+ heads).

    ``forward(pixels)`` returns the (B, 1 + side^2, dim) tokens; ``concept_logits``
    and ``patch_logits`` read them out with the trained heads.
    """

    def __init__(self, config: WorldEncoderConfig | None = None):
        super().__init__()
        self.config = config or WorldEncoderConfig()
        cfg = self.config
        stages: list[nn.Module] = []
        width = 3
        for channels in cfg.stem_channels:
            stages.append(_downsample(width, channels))
            stages += [ResidualBlock(channels) for _ in range(cfg.stem_blocks)]
            width = channels
        # the hybrid ViT's patch embedding: a 1x1 projection of the CNN feature map
        self.stem = nn.Sequential(*stages, nn.Conv2d(width, cfg.dim, kernel_size=1))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + cfg.side**2, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        if cfg.factor_depth:
            self.factor_blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.factor_depth))
            self.factor_proj = nn.Linear(cfg.dim, cfg.dim)
            self.register_buffer("concept_basis", concept_basis(len(cfg.concepts), cfg.dim, cfg.basis_seed))
        n_patch_out = 1 + sum(len(v) for v in cfg.patch_families.values()) + len(cfg.patch_extras)
        self.heads = nn.ModuleDict(
            {
                "concepts_cls": nn.Linear(cfg.dim, len(cfg.concepts)),  # presence from the CLS token
                "concepts_pooled": nn.Linear(cfg.dim, len(cfg.concepts)),  # presence from mean patch token
                "patch": nn.Linear(cfg.dim, n_patch_out),  # object cover, family classes, extras cover
            }
        )

    def trunk(self, pixels: Tensor) -> Tensor:
        """(B, 3, size, size) pixels in [-1, 1] -> (B, 1 + side^2, dim) layer-normed trunk tokens (the heads' input)."""
        patches = self.stem(pixels).flatten(2).transpose(1, 2)  # (B, side^2, dim)
        x = torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def factor_readout(self, trunk: Tensor) -> Tensor:
        """Trunk tokens -> factor tokens (B, 1 + side^2, dim): each a sum of its concepts' basis directions."""
        x = trunk
        for block in self.factor_blocks:
            x = block(x)
        return self.factor_proj(x)

    def head_tokens(self, trunk: Tensor) -> Tensor:
        """Trunk tokens -> (B, 1 + P, n_concepts) tokens in the heads' own coordinates, one per world concept.

        The CLS token holds the image-level head's presence probabilities. A patch holds, per patch family, the
        patch head's softmax over the family times the share of the patch the object covers (the background's
        times the rest), each extra's sigmoid, and the image-level probabilities of the families only an object
        shows (count, size, position) times the object's cover: ``factor_weights`` with the ground truth replaced
        by the heads' predictions. The families occupy disjoint coordinates (``family_masks``).
        """
        from precompute.world.concepts import CONCEPT_BY_NAME

        config, column = self.config, {name: i for i, name in enumerate(self.config.concepts)}
        presence = torch.sigmoid(self.concept_logits(trunk)["cls"])
        patch = self.patch_logits(trunk)
        cover = torch.sigmoid(patch["cover"])  # (B, P)
        tokens = trunk.new_zeros(len(trunk), trunk.shape[1], len(config.concepts))
        tokens[:, 0] = presence
        for family, members in config.patch_families.items():
            gate = (1 - cover) if family == "background" else cover
            tokens[:, 1:, [column[m] for m in members]] = torch.softmax(patch[family], dim=-1) * gate[..., None]
        tokens[:, 1:, [column[m] for m in config.patch_extras]] = torch.sigmoid(patch["extras"])
        shown = [i for i, name in enumerate(config.concepts)  # an object's families the patch head does not read
                 if CONCEPT_BY_NAME[name].family in OBJECT_FAMILIES and CONCEPT_BY_NAME[name].family not in
                 config.patch_families]
        tokens[:, 1:, shown] = presence[:, None, shown] * cover[..., None]
        return tokens

    def family_masks(self) -> Tensor:
        """(families, n_concepts) 0/1: the coordinates of each concept family in ``head_tokens``."""
        from precompute.world.concepts import CONCEPT_BY_NAME

        families = [CONCEPT_BY_NAME[name].family for name in self.config.concepts]
        return torch.tensor([[f == family for f in families] for family in sorted(set(families))],
                            dtype=torch.float32)

    def forward(self, pixels: Tensor) -> Tensor:
        """The model's tokens: the factor read-out's when it has one, else the trunk's."""
        trunk = self.trunk(pixels)
        return self.factor_readout(trunk) if self.config.factor_depth else trunk

    def concept_logits(self, tokens: Tensor) -> dict[str, Tensor]:
        """Image-level concept logits (B, n_concepts) from the CLS and from the mean patch token."""
        return {
            "cls": self.heads["concepts_cls"](tokens[:, 0]),
            "pooled": self.heads["concepts_pooled"](tokens[:, 1:].mean(dim=1)),
        }

    def patch_logits(self, tokens: Tensor) -> dict[str, Tensor]:
        """Per-patch logits: ``cover`` (B, P), each family (B, P, n_members), ``extras`` (B, P, n_extras)."""
        out = self.heads["patch"](tokens[:, 1:])
        logits = {"cover": out[..., 0]}
        start = 1
        for family, members in self.config.patch_families.items():
            logits[family] = out[..., start : start + len(members)]
            start += len(members)
        logits["extras"] = out[..., start:]
        return logits

    # -- storage ------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (float weights as float32, no pickles)."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            name: (value.float() if value.is_floating_point() else value).detach().cpu().contiguous()
            for name, value in self.state_dict().items()
        }
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "model_type": MODEL_TYPE})
        os.replace(tmp, path / WEIGHTS_FILE)
        write_text_atomic(path / CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> WorldEncoder:
        """Load a folder written by ``save_pretrained``; ``ConfigError`` saying what is wrong."""
        path = Path(folder)
        config = read_world_config(path)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ConfigError(f"world encoder folder {path} has no {WEIGHTS_FILE}")
        model = cls(config)
        try:
            state = load_file(str(weights))
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise ConfigError(f"cannot read the world encoder weights {weights}: {err}") from err
        expected = set(model.state_dict())
        if set(state) != expected:
            raise ConfigError(
                f"{weights} does not fit its config: missing {sorted(expected - set(state))}, "
                f"unexpected {sorted(set(state) - expected)}"
            )
        model.load_state_dict(state)
        return model.eval()


OBJECT_FAMILIES = ("shape", "colour", "pattern", "count", "size", "position")  # what an object patch shows


def factor_weights(config: WorldEncoderConfig, presence: Tensor, cover: Tensor) -> Tensor:
    """How much each token shows each concept: (B, 1 + P, n_concepts), the factor read-out's coefficients.

    ``presence`` (B, n_concepts) 0/1 over ``config.concepts``; ``cover`` (B, 1 + n_extras, P): per
    patch the share covered by an object, then by each of ``config.patch_extras``. The CLS token
    shows every concept of the image (weight 1). A patch shows the object's concepts (shape, colour,
    pattern, count, size and position all describe the object) by the share the object covers, the
    background by the rest, and each extra by the share it covers.
    """
    from precompute.world.concepts import CONCEPT_BY_NAME

    families = [CONCEPT_BY_NAME[name].family for name in config.concepts]
    object_cover = cover[:, 0]  # (B, P)
    is_object = torch.tensor([f in OBJECT_FAMILIES for f in families], dtype=presence.dtype)
    is_background = torch.tensor([f == "background" for f in families], dtype=presence.dtype)
    patch = presence[:, None, :] * (object_cover[..., None] * is_object + (1 - object_cover[..., None]) * is_background)
    for slot, extra in enumerate(config.patch_extras, start=1):
        patch[..., config.concepts.index(extra)] = cover[:, slot]
    return torch.cat([presence[:, None, :], patch], dim=1)


def concept_basis(n_concepts: int, dim: int, seed: int) -> Tensor:
    """``n_concepts`` orthonormal directions in ``dim`` dimensions (rows of a seeded random rotation)."""
    return random_orthogonal(dim, seed).T[:n_concepts].contiguous()


def read_world_config(path: Path) -> WorldEncoderConfig:
    """The ``WorldEncoderConfig`` of a weights folder, or ``ConfigError``."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"world encoder folder {path} has no {CONFIG_FILE}")
    try:
        document = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {config_path}: {err}") from err
    if document.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{config_path}: expected model_type {MODEL_TYPE!r}, got {document.get('model_type')!r}")
    return WorldEncoderConfig.from_dict(document)


def world_pixels(images: ImageBatch, size: int = 64) -> Tensor:
    """World images -> (B, 3, size, size) float32 in [-1, 1]; other sizes resized (bicubic).

    A (B, size, size, 3) uint8 array, the common case, is converted in one operation.
    """
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (size, size, 3):
        pixels = images
    else:
        resized = [
            image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BICUBIC)
            for image in as_pil_list(images)
        ]
        pixels = np.stack([np.asarray(image) for image in resized])
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).to(torch.float32)
    return batch.div_(127.5).sub_(1.0)


class WorldEnergyModel(EnergyModel):
    """The world encoder behind the ``EnergyModel`` interface (65 tokens: CLS + 8 x 8 patches).

    ``readout``: ``"trunk"`` gives the trunk's tokens (``dim`` wide; the factor read-out's where the weights have
    one); ``"heads"`` gives them in the trained heads' coordinates (``WorldEncoder.head_tokens``: one per world
    concept), with one token group per concept family (``token_groups``), the world lens of the demo.
    """

    def __init__(
        self,
        source: str | os.PathLike = SHIPPED_WEIGHTS,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        readout: str = "trunk",
    ):
        super().__init__(device, dtype)
        if readout not in READOUTS:
            raise ConfigError(f"world encoder readout must be one of {READOUTS}, got {readout!r}")
        self.model = WorldEncoder.from_pretrained(source).to(self.device, self.dtype)
        self.readout = readout
        shipped = Path(source).resolve() == SHIPPED_WEIGHTS.resolve()
        self.name = ("world" if shipped else str(source)) + ("-heads" if readout == "heads" else "")
        self._groups = self.model.family_masks() if readout == "heads" else None

    @property
    def config(self) -> WorldEncoderConfig:
        return self.model.config

    @property
    def dim(self) -> int:
        return len(self.config.concepts) if self.readout == "heads" else self.config.dim

    @property
    def token_groups(self) -> Tensor | None:
        return self._groups

    @property
    def grid(self) -> tuple[int, int]:
        return (self.config.side, self.config.side)

    @property
    def n_prefix(self) -> int:
        return 1

    def preprocess(self, images: ImageBatch) -> Tensor:
        """Resize to the encoder's size if needed (bicubic) and scale to [-1, 1]."""
        return world_pixels(images, self.config.image_size)

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model.head_tokens(self.model.trunk(pixels)) if self.readout == "heads" else self.model(pixels)

    def world_embeddings(self, images: ImageBatch) -> Tensor:
        """(batch, dim) L2-normalised mean patch token, float32: the internal lens's semantic embedding.

        The mean patch token is what the encoder was trained to make linearly
        predictive of every world concept, so cosine distances between these
        embeddings (RAIGen's distinctiveness) track concept differences.
        """
        with torch.no_grad():  # the model's own tokens whatever the readout: the internal lens does not change
            tokens = self.model(self.preprocess(images).to(self.device, self.dtype))
        return F.normalize(tokens[:, self.n_prefix:].float().mean(dim=1), dim=-1)

    def embed(self, images: ImageBatch) -> Tensor:
        return self.world_embeddings(images)

    def concept_probabilities(self, images: ImageBatch) -> Tensor:
        """(batch, n_concepts) presence probabilities of the trained pooled head (on the trunk's tokens), float32."""
        with torch.no_grad():
            pixels = self.preprocess(images).to(self.device, self.dtype)
            return torch.sigmoid(self.model.concept_logits(self.model.trunk(pixels))["pooled"].float())
