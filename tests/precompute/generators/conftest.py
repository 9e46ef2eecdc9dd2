"""Tiny random-weight diffusers pipelines saved to disk, loaded back by path like real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import one_torch_thread


def save_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionPipeline`` (real classes, random weights) written with ``save_pretrained``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from precompute.generators.world_tokenizer import build_world_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_world_tokenizer(folder / "_vocab")
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A saved tiny Stable Diffusion pipeline folder."""
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_sd_other(tmp_path_factory) -> Path:
    """A second tiny pipeline with other weights (its UNet is the swap-in)."""
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-other", seed=1)


@pytest.fixture
def one_thread():
    """One torch thread for the test (see ``one_torch_thread``)."""
    with one_torch_thread():
        yield
