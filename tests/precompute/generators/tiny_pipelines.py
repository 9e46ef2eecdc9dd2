"""Tiny random-weight pipelines of the real diffusers classes, written with ``save_pretrained``.

One builder per pipeline family the project supports: the paper's Stable Diffusion 1.5
(and its UNet swap), 2.1, PixArt-alpha and Kandinsky 2.1 (decoder + prior), and
RAIGen's SDXL and FLUX. The component classes and their wiring are those of each
real checkpoint (what diffusers' own fast tests build); the widths, depths and
vocabularies are the smallest that keep the wiring intact, so every pipeline makes a
64x64 image in well under a second on one CPU thread. Tokenizers are built here from
the embedded world's caption words (CLIP's byte-level BPE; T5's and XLM-RoBERTa's
Unigram models), since no hub is reached.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _words() -> tuple[str, ...]:
    from precompute.generators.world_tokenizer import caption_words

    return caption_words()


def clip_tokenizer(folder: Path):
    from precompute.generators.world_tokenizer import build_world_tokenizer

    return build_world_tokenizer(folder / "_vocab")


def _unigram_vocab(specials: tuple[str, ...], tail: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    """Special tokens, each caption word as one piece, then single characters as the fallback."""
    words = _words()
    characters = sorted({c for w in words for c in w} | {chr(c) for c in range(ord("a"), ord("z") + 1)})
    return ([(s, 0.0) for s in specials] + [("\u2581" + w, -1.0) for w in words] + [("\u2581", -4.0)]
            + [(c, -8.0) for c in characters] + [(s, 0.0) for s in tail])


def t5_tokenizer(max_length: int = 64):
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_unigram_vocab(("<pad>", "</s>", "<unk>")), extra_ids=0, model_max_length=max_length)


def xlm_roberta_tokenizer():
    from transformers import XLMRobertaTokenizer

    return XLMRobertaTokenizer(vocab=_unigram_vocab(("<s>", "<pad>", "</s>", "<unk>"), ("<mask>",)),
                               model_max_length=77)


def clip_text_config(tokenizer, hidden: int = 16, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=2, num_hidden_layers=1,
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def t5_encoder(tokenizer, width: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(d_model=width, d_ff=2 * width, d_kv=8, num_layers=1, num_heads=4,
                                   vocab_size=len(tokenizer), relative_attention_num_buckets=8,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))


def small_vae(blocks: int = 3, latent_channels: int = 4, **extra):
    """An ``AutoencoderKL`` that downsamples by 2 ** (blocks - 1)."""
    from diffusers import AutoencoderKL

    widths = (8,) * (blocks - 1) + (16,)
    return AutoencoderKL(block_out_channels=widths, in_channels=3, out_channels=3, latent_channels=latent_channels,
                         norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks, sample_size=64, **extra)


def save_tiny_sd(folder: Path, seed: int = 0, version: int = 1) -> Path:
    """A tiny ``StableDiffusionPipeline``: SD 1.5's layout, or (``version=2``) SD 2.1's.

    SD 2.x differs in the UNet (per-level head counts, linear projections in the
    transformers), a GELU OpenCLIP-style text encoder and v-prediction.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder)
    v2 = {"attention_head_dim": (2, 4), "use_linear_projection": True} if version == 2 else {"attention_head_dim": 2}
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=8, **v2,
    )
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, **({"hidden_act": "gelu"} if version == 2 else {})))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="v_prediction" if version == 2 else "epsilon")
    pipeline = StableDiffusionPipeline(vae=small_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def save_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionXLPipeline``: two CLIP text encoders, a UNet conditioned on size and pooled text."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder)
    text_encoder = CLIPTextModel(clip_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer, projection_dim=16))
    time_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        cross_attention_dim=32,  # both encoders' hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + 16,  # six size numbers + the pooled projection
    )
    pipeline = StableDiffusionXLPipeline(
        vae=small_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(folder)
    return folder


def save_tiny_pixart(folder: Path, seed: int = 0) -> Path:
    """A tiny ``PixArtAlphaPipeline``: a T5 text encoder and a ``PixArtTransformer2DModel`` of two blocks.

    ``sample_size = 32`` is the 256-pixel model, whose resolution bins the pipeline uses.
    """
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer(max_length=120)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, out_channels=8, cross_attention_dim=16, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    pipeline = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=t5_encoder(tokenizer), vae=small_vae(blocks=4),
                                   transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    pipeline.save_pretrained(folder)
    return folder


def save_tiny_kandinsky(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny Kandinsky 2.1: the decoder (``KandinskyPipeline``) and its prior (``KandinskyPriorPipeline``).

    Returns (decoder folder, prior folder), saved apart as on the hub. The prior maps
    CLIP text to a CLIP image embedding; the decoder's UNet reads that embedding and
    the multilingual CLIP text states, and a MoVQ decodes its latents.
    """
    from diffusers import (
        DDIMScheduler,
        KandinskyPipeline,
        KandinskyPriorPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from diffusers.pipelines.kandinsky.text_encoder import MCLIPConfig, MultilingualCLIP
    from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

    embed = 16  # the CLIP image embedding: the prior's output, the decoder's condition
    torch.manual_seed(seed)
    clip = clip_tokenizer(folder)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=8, embedding_dim=embed, num_layers=1,
                             num_embeddings=clip.model_max_length)  # one position per text token
    with torch.no_grad():
        prior.clip_std.fill_(1.0)  # zero std would map every embedding to the mean
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=embed, projection_dim=embed, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        image_size=32, patch_size=16, num_channels=3))
    prior_pipeline = KandinskyPriorPipeline(
        prior=prior, image_encoder=image_encoder,
        text_encoder=CLIPTextModelWithProjection(clip_text_config(clip, projection_dim=embed)), tokenizer=clip,
        scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", clip_sample=True,
                                  clip_sample_range=10.0),
        image_processor=CLIPImageProcessor(size=32, crop_size=32, resample=3),
    )
    tokenizer = xlm_roberta_tokenizer()
    text_encoder = MultilingualCLIP(MCLIPConfig(
        numDims=embed, transformerDimensions=16, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, vocab_size=len(tokenizer), max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8,  # mean and variance
        addition_embed_type="text_image", encoder_hid_dim=16, encoder_hid_dim_type="text_image_proj",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(8, 16), layers_per_block=1,
        cross_attention_dim=embed, attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type=None,
        norm_num_groups=8,
    )
    movq = VQModel(block_out_channels=(32, 32, 32),  # spatial norms use 32 groups
                   down_block_types=("DownEncoderBlock2D",) * 2
                   + ("AttnDownEncoderBlock2D",), up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 2,
                   in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                   norm_type="spatial", num_vq_embeddings=12, vq_embed_dim=4)
    decoder = KandinskyPipeline(text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, movq=movq,
                                scheduler=DDIMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1))
    decoder.save_pretrained(folder / "decoder")
    prior_pipeline.save_pretrained(folder / "prior")
    return folder / "decoder", folder / "prior"


def save_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """A tiny ``FluxPipeline``: CLIP + T5 text encoders, one double- and one single-stream block, flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    clip = clip_tokenizer(folder)
    tokenizer_2 = t5_tokenizer(max_length=64)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=16, axes_dims_rope=(4, 4, 8),
    )
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=small_vae(latent_channels=4, shift_factor=0.0, scaling_factor=1.0),
        text_encoder=CLIPTextModel(clip_text_config(clip)), tokenizer=clip, text_encoder_2=t5_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2, transformer=transformer,
    )
    pipeline.save_pretrained(folder)
    return folder
