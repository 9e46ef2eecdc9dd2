"""DINOv2 (with and without registers) and CLIP through ``load_energy_model``, tiny random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.encoders import CLIPEncoder, DINOv2Encoder, Tokens, load_energy_model
from precompute.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, resize_crop_normalise
from precompute.errors import ConfigError


def test_dinov2_with_registers_gives_the_papers_261_tokens(dinov2_reg_dir, photos):
    model = load_energy_model(str(dinov2_reg_dir))
    assert isinstance(model, DINOv2Encoder)
    tokens = model.encode(photos[:2])
    assert isinstance(tokens, Tokens)
    assert tokens.tokens.shape == (2, 1 + 4 + 256, 32) == (2, model.n_tokens, model.dim)
    assert tokens.grid == model.grid == (16, 16)
    assert tokens.patch_mask.dtype == torch.bool and tokens.patch_mask.shape == (261,)
    assert not tokens.patch_mask[:5].any() and tokens.patch_mask[5:].all()
    assert tokens.patches().shape == (2, 16, 16, 32)


def test_dinov2_tokens_are_the_layer_normed_last_hidden_state(dinov2_reg_dir, photos):
    from transformers import Dinov2WithRegistersModel

    model = load_energy_model(dinov2_reg_dir)
    reference = Dinov2WithRegistersModel.from_pretrained(dinov2_reg_dir).eval()
    pixels = resize_crop_normalise(photos[:1], 256, 224, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        out = reference(pixel_values=pixels, output_hidden_states=True)
        normed = reference.layernorm(out.hidden_states[-1])
    torch.testing.assert_close(model.encode(photos[:1]).tokens, out.last_hidden_state)
    torch.testing.assert_close(out.last_hidden_state, normed)


def test_plain_dinov2_has_no_registers(dinov2_dir, photos):
    model = load_energy_model(dinov2_dir)
    tokens = model.encode(photos[:1])
    assert tokens.tokens.shape == (1, 257, 32) and model.n_prefix == 1
    assert not tokens.patch_mask[0] and tokens.patch_mask[1:].all()


def test_batches_of_two_equal_one_batch_of_five(dinov2_reg_dir, photos):
    model = load_energy_model(dinov2_reg_dir)
    whole = model.encode(photos).tokens
    seen = []
    parts = list(model.encode_batches(iter(photos), batch_size=2, progress=seen.append))
    assert [p.batch_size for p in parts] == [2, 2, 1] and seen == [2, 2, 1]
    torch.testing.assert_close(torch.cat([p.tokens for p in parts]), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,tolerance", [("fp16", 0.05), ("bf16", 0.2)])
def test_half_precision_on_cpu(dinov2_reg_dir, photos, dtype, tolerance):
    full = load_energy_model(dinov2_reg_dir).encode(photos[:2]).tokens
    half_model = load_energy_model(dinov2_reg_dir, dtype=dtype)
    half = half_model.encode(photos[:2]).tokens
    assert half.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert half_model.describe()["dtype"] == {"fp16": "float16", "bf16": "bfloat16"}[dtype]
    torch.testing.assert_close(half.float(), full, atol=tolerance, rtol=0)


def test_pil_images_and_a_uint8_batch_give_the_same_tokens(dinov2_dir):
    batch = np.random.default_rng(1).integers(0, 256, size=(3, 64, 96, 3), dtype=np.uint8)
    model = load_energy_model(dinov2_dir)
    torch.testing.assert_close(model.encode(batch).tokens, model.encode([Image.fromarray(x) for x in batch]).tokens)


def test_clip_tokens_are_post_layernormed_and_embeddings_match_clip_model(clip_dir, photos):
    from transformers import CLIPModel

    model = load_energy_model(clip_dir)
    assert isinstance(model, CLIPEncoder)
    tokens = model.encode(photos[:2])
    assert tokens.tokens.shape == (2, 1 + 16, 32) and tokens.grid == (4, 4)
    assert not tokens.patch_mask[0] and tokens.patch_mask[1:].all()
    reference = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = model.preprocess(photos[:2])
    with torch.no_grad():
        vision = reference.vision_model(pixel_values=pixels)
        features = reference.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(tokens.tokens, reference.vision_model.post_layernorm(vision.last_hidden_state))
    torch.testing.assert_close(tokens.tokens[:, 0], vision.pooler_output)
    embeddings = model.clip_image_embeddings(photos[:2])
    assert embeddings.shape == (2, 16) == (2, model.projection_dim)
    torch.testing.assert_close(embeddings, torch.nn.functional.normalize(features, dim=-1))
    torch.testing.assert_close(model.embed(photos[:2]), embeddings)


def test_clip_vision_tower_alone_gives_tokens_but_no_embeddings(clip_vision_dir, photos):
    model = load_energy_model(clip_vision_dir, dtype="bf16")
    assert model.encode(photos[:1]).tokens.shape == (1, 17, 32)
    assert model.projection_dim is None
    with pytest.raises(ConfigError, match="without the visual projection"):
        model.clip_image_embeddings(photos[:1])


def test_models_without_embeddings_say_so(dinov2_dir, photos):
    with pytest.raises(ConfigError, match="no semantic image embeddings"):
        load_energy_model(dinov2_dir).embed(photos[:1])
