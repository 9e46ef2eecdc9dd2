"""Energy models: frozen vision networks that turn images into tokens for the SAEs.

One contract (``EnergyModel.encode(images) -> Tokens``) for DINOv2 with registers
(the blindspots paper's energy model, 261 tokens), plain DINOv2, CLIP's vision tower
(and CLIP image embeddings for the internal lens), and the embedded world's own
encoder (65 tokens, weights shipped in ``weights/world-encoder``).
``load_energy_model(spec)`` picks the class from the checkpoint's ``model_type``.
"""

from precompute.encoders.base import DTYPES, EnergyModel, Tokens, parse_device, parse_dtype
from precompute.encoders.clip import CLIPEncoder
from precompute.encoders.dinov2 import DEFAULT_DINOV2, DINOv2Encoder
from precompute.encoders.loading import SUPPORTED_MODEL_TYPES, WORLD_SPEC, load_energy_model
from precompute.encoders.world_encoder import SHIPPED_WEIGHTS, WorldEncoder, WorldEncoderConfig, WorldEnergyModel

__all__ = [
    "CLIPEncoder",
    "DEFAULT_DINOV2",
    "DINOv2Encoder",
    "DTYPES",
    "EnergyModel",
    "SHIPPED_WEIGHTS",
    "SUPPORTED_MODEL_TYPES",
    "Tokens",
    "WORLD_SPEC",
    "WorldEncoder",
    "WorldEncoderConfig",
    "WorldEnergyModel",
    "load_energy_model",
    "parse_device",
    "parse_dtype",
]
