"""``load_energy_model``: one spec string ("world", a hub id or a local folder) -> an ``EnergyModel``.

The kind of model is read from the checkpoint's ``config.json`` ``model_type``
before any weights are touched, so a wrong path or an unsupported model fails at
once with a ``ConfigError`` that says what was found, not halfway through a run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from precompute.encoders.base import EnergyModel, parse_device, parse_dtype
from precompute.encoders.clip import CLIP_MODEL_TYPES, CLIPEncoder
from precompute.encoders.dinov2 import DINOV2_MODEL_TYPES, DINOv2Encoder
from precompute.encoders.world_encoder import MODEL_TYPE as WORLD_MODEL_TYPE
from precompute.encoders.world_encoder import SHIPPED_WEIGHTS, WorldEnergyModel
from precompute.errors import ConfigError

WORLD_SPEC = "world"
WORLD_HEADS_SPEC = "world-heads"  # the shipped world encoder read out through its heads (the demo's world lens)
SUPPORTED_MODEL_TYPES = (*DINOV2_MODEL_TYPES, *CLIP_MODEL_TYPES, WORLD_MODEL_TYPE)
# "org/name" or "name" of the Hugging Face hub (letters, digits, - _ .), no path separators beyond one "/"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_energy_model(
    spec: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32"
) -> EnergyModel:
    """Load the energy model named by ``spec`` on ``device`` in ``dtype`` (``fp32``/``fp16``/``bf16``).

    - ``"world"``: the shipped world encoder (``precompute/encoders/weights/world-encoder``);
    - ``"world-heads"``: the same encoder read out through its trained heads, one coordinate per world
      concept and one token group per concept family (``WorldEnergyModel(readout="heads")``);
    - an existing local folder: its ``config.json`` ``model_type`` picks the class
      (``dinov2_with_registers``, ``dinov2``, ``clip``, ``clip_vision_model``, or a
      world encoder folder);
    - otherwise a hub id (``facebook/dinov2-with-registers-base``): the same
      detection through ``transformers.AutoConfig``, which needs the hub or its cache.
    """
    device, dtype = parse_device(device), parse_dtype(dtype)
    if isinstance(spec, str) and spec == WORLD_SPEC:
        return _build(WORLD_MODEL_TYPE, SHIPPED_WEIGHTS, device, dtype)
    if isinstance(spec, str) and spec == WORLD_HEADS_SPEC:
        return WorldEnergyModel(SHIPPED_WEIGHTS, device, dtype, readout="heads")
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ConfigError(f"energy model must be 'world', 'world-heads', a hub id or a local folder, got {spec!r}")
    path = Path(spec).expanduser()
    if path.exists():
        return _build(_local_model_type(path), path, device, dtype)
    if isinstance(spec, Path) or not _HUB_ID.match(spec):
        raise ConfigError(f"energy model folder {str(spec)!r} does not exist (and it is not a hub id)")
    return _build(_hub_model_type(spec), spec, device, dtype)


def _local_model_type(path: Path) -> str:
    if not path.is_dir():
        raise ConfigError(f"energy model path {path} is a file; expected a folder holding config.json and weights")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConfigError(
            f"energy model folder {path} has no config.json; expected a DINOv2, CLIP or world encoder checkpoint"
        )
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise ConfigError(f"cannot read {config_path}: {err}") from err
    return _check_model_type(model_type, str(path))


def _hub_model_type(hub_id: str) -> str:
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(hub_id).model_type
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"energy model {hub_id!r} is neither a local folder nor a hub model this machine can reach "
            f"(download it once, or give a local path): {err}"
        ) from err
    return _check_model_type(model_type, hub_id)


def _check_model_type(model_type: object, where: str) -> str:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not an energy model we support {SUPPORTED_MODEL_TYPES}"
        )
    return str(model_type)


def _build(model_type: str, source: str | Path, device: torch.device, dtype: torch.dtype) -> EnergyModel:
    if model_type == WORLD_MODEL_TYPE:
        return WorldEnergyModel(source, device, dtype)
    if model_type in CLIP_MODEL_TYPES:
        return CLIPEncoder(source, device, dtype)
    return DINOv2Encoder(source, device, dtype, model_type=model_type)
