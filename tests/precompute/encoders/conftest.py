"""Tiny random-weight checkpoints of the real transformers classes, saved to a temp folder.

The encoders are loaded back by path through ``load_energy_model``, the code path
users run with real weights (DESIGN section 7). Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _save(model, folder):
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def dinov2_reg_dir(tmp_path_factory):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=28,
        num_register_tokens=4,
    )
    return _save(Dinov2WithRegistersModel(config), tmp_path_factory.mktemp("dinov2-reg"))


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(1)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14, image_size=28
    )
    return _save(Dinov2Model(config), tmp_path_factory.mktemp("dinov2"))


_CLIP_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14
)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(2)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=16,
        ),
        vision_config=_CLIP_VISION,
        projection_dim=16,
    )
    return _save(CLIPModel(config), tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def clip_vision_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(3)
    return _save(CLIPVisionModel(CLIPVisionConfig(**_CLIP_VISION)), tmp_path_factory.mktemp("clip-vision"))


@pytest.fixture(scope="session")
def photos():
    """Five random RGB images of different sizes and aspect ratios (uint8 arrays)."""
    rng = np.random.default_rng(0)
    shapes = [(240, 320), (300, 260), (224, 224), (256, 400), (500, 230)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]
