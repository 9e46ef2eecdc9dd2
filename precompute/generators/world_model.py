"""The embedded world's trained generator: a tiny text-to-image diffusion model of real diffusers parts.

``WorldPipeline`` is a ``DiffusionPipeline`` with the components Stable Diffusion
has, minus the VAE: a ``UNet2DConditionModel`` (with a ``mid_block``, the
bottleneck the internal lens hooks), a ``CLIPTextModel``, a ``CLIPTokenizer`` over
the world's caption vocabulary (``world_tokenizer``) and a diffusers scheduler.
It is saved with ``save_pretrained`` (``model_index.json`` + one folder per
component, safetensors) and loaded with ``WorldPipeline.from_pretrained``, the
same ``DiffusionPipeline.from_pretrained`` code path Stable Diffusion uses, so
everything downstream (activation capture, steering hooks) runs unchanged on
real models.

Instead of a VAE latent, the UNet works in pixel space made smaller by a lossless
f x f pixel-unshuffle (``WorldModelConfig.unshuffle``): with f = 2 a 32x32x3 image in
[-1, 1] is a 16x16x12 UNet sample, with f = 4 a 64x64x3 image is a 16x16x48 one (the
same UNet cost, four times the pixels). The pipeline reads f and the image size back
from its UNet's config. A model that generates below the world's 64x64 is upsampled
(bicubic) by its callers; fine detail lost that way (thin stripes, small dots, text
lines) is a realistic blindspot source of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from precompute.errors import ConfigError
from precompute.generators.world_tokenizer import MAX_LENGTH, build_world_tokenizer

IMAGE_SIZE = 32  # pixels the original world model generates (WorldModelConfig's default); callers resize
UNSHUFFLE = 2  # its 2x2 pixel-unshuffle: (3, 32, 32) image <-> (12, 16, 16) UNet sample
SAMPLE_CHANNELS = 3 * UNSHUFFLE**2
SAMPLE_SIZE = IMAGE_SIZE // UNSHUFFLE
OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass(frozen=True)
class WorldModelConfig:
    """Architecture of a world generator; ``tiny()`` is the random-weight test size."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_levels: int = 1  # lowest UNet levels with cross-attention (the mid block always has it)
    attention_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    norm_num_groups: int = 32
    image_size: int = IMAGE_SIZE  # pixels generated
    unshuffle: int = UNSHUFFLE  # pixel-unshuffle factor: the UNet's sample is (3 f^2, size / f, size / f)

    @property
    def sample_size(self) -> int:
        return self.image_size // self.unshuffle

    @property
    def sample_channels(self) -> int:
        return 3 * self.unshuffle**2

    def __post_init__(self) -> None:
        if self.image_size % self.unshuffle:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of unshuffle {self.unshuffle}")
        channels = self.block_out_channels
        if not channels or any(not isinstance(c, int) or c % self.norm_num_groups for c in channels):
            raise ConfigError(
                f"block_out_channels must be ints divisible by norm_num_groups={self.norm_num_groups}, got {channels!r}"
            )
        if self.sample_size % 2 ** (len(channels) - 1):
            raise ConfigError(f"{len(channels)} UNet levels cannot halve a {self.sample_size}x{self.sample_size} sample")
        if not 1 <= self.attention_levels <= len(channels):
            raise ConfigError(f"attention_levels must be in [1, {len(channels)}], got {self.attention_levels!r}")
        if self.text_hidden % self.text_heads:
            raise ConfigError(f"text_hidden={self.text_hidden} must be divisible by text_heads={self.text_heads}")

    @classmethod
    def tiny(cls) -> WorldModelConfig:
        """A few-thousand-parameter model for fast tests."""
        return cls(block_out_channels=(8, 16), layers_per_block=1, attention_heads=2,
                   text_hidden=16, text_layers=1, text_heads=2, norm_num_groups=8)

    def to_dict(self) -> dict:
        return asdict(self)


def make_unet(config: WorldModelConfig) -> UNet2DConditionModel:
    """The denoiser: plain ResNet blocks at the high resolutions, cross-attention at the lowest ones.

    Attention only where the sample is small keeps training affordable on a CPU: a
    cross-attention block at 8x8 costs more than all convolutions of its level.
    """
    levels, attended = len(config.block_out_channels), config.attention_levels
    down = ("DownBlock2D",) * (levels - attended) + ("CrossAttnDownBlock2D",) * attended
    up = ("CrossAttnUpBlock2D",) * attended + ("UpBlock2D",) * (levels - attended)
    return UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=config.sample_channels,
        out_channels=config.sample_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        cross_attention_dim=config.text_hidden,
        # diffusers' legacy name: for this UNet class ``attention_head_dim`` is the number of heads
        attention_head_dim=config.attention_heads,
        norm_num_groups=config.norm_num_groups,
    )


def make_text_encoder(config: WorldModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A small CLIP text transformer over the world vocabulary (32 positions)."""
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=4 * config.text_hidden,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(text_config)


def make_scheduler() -> DPMSolverMultistepScheduler:
    """The inference scheduler: 2nd-order DPM-Solver++ on the cosine schedule, v-prediction.

    Training reads the same betas through ``DDPMScheduler.from_config(pipe.scheduler.config)``.
    """
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )


def build_world_pipeline(
    tokenizer_dir: str | Path, config: WorldModelConfig | None = None, seed: int = 0
) -> WorldPipeline:
    """A freshly initialised (random-weight) ``WorldPipeline``; its tokenizer files go to ``tokenizer_dir``."""
    config = config or WorldModelConfig()
    torch.manual_seed(seed)
    tokenizer = build_world_tokenizer(tokenizer_dir)
    return WorldPipeline(
        unet=make_unet(config),
        text_encoder=make_text_encoder(config, tokenizer),
        tokenizer=tokenizer,
        scheduler=make_scheduler(),
    )


def images_to_sample(images: torch.Tensor, factor: int = UNSHUFFLE) -> torch.Tensor:
    """(B, 3, S, S) images in [-1, 1] -> (B, 3 f^2, S / f, S / f) UNet samples (lossless f x f unshuffle)."""
    return F.pixel_unshuffle(images, factor)


def sample_to_images(sample: torch.Tensor, factor: int = UNSHUFFLE) -> torch.Tensor:
    """(B, 3 f^2, s, s) UNet samples -> (B, 3, s f, s f) images; inverse of ``images_to_sample``."""
    return F.pixel_shuffle(sample, factor)


class WorldPipeline(DiffusionPipeline):
    """Text-to-image for the embedded world, shaped like ``StableDiffusionPipeline``.

    Components: ``unet`` (``UNet2DConditionModel``), ``text_encoder``
    (``CLIPTextModel``), ``tokenizer`` (``CLIPTokenizer``), ``scheduler``.

    Classifier-free guidance batch layout: the UNet sees ``[uncond, cond]``
    concatenated along the batch, the unconditional half (empty caption) FIRST and
    the conditional half SECOND, as in diffusers' Stable Diffusion pipeline; hooks
    that want the conditional activations take the second half. With
    ``guidance_scale <= 1`` there is no unconditional half.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids (B, 32), padded and truncated like Stable Diffusion's prompts."""
        return self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states (B, 32, hidden) the UNet cross-attends to."""
        ids = self.tokenize(prompts).to(self.text_encoder.device)
        return self.text_encoder(ids).last_hidden_state.to(self.unet.dtype)

    @property
    def unshuffle(self) -> int:
        """The pixel-unshuffle factor f, read from the UNet: its sample has 3 f^2 channels."""
        return round((self.unet.config.in_channels // 3) ** 0.5)

    @property
    def image_size(self) -> int:
        """The side of the images this model generates (the UNet's sample side times f)."""
        return self.unet.config.sample_size * self.unshuffle

    def prepare_latents(self, batch: int, generator, device, dtype) -> torch.Tensor:
        """Initial noise (B, 3 f^2, s, s); with a list of generators each image draws from its own."""
        config = self.unet.config
        shape = (batch, config.in_channels, config.sample_size, config.sample_size)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        negative_prompt: str | list[str] | None = None,
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one ``image_size`` x ``image_size`` image per prompt.

        Pass one ``torch.Generator`` per prompt (a list) to make each image depend on
        its own seed only, whatever else is in the batch. ``output_type``: ``"pil"``
        (list of PIL images), ``"np"`` (B, S, S, 3) float in [0, 1], ``"pt"``
        (B, 3, S, S) float in [0, 1]. ``negative_prompt`` replaces the empty
        caption as the unconditional half.
        """
        # 0. Check inputs
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise ConfigError(f"got {len(generator)} generators for {len(prompts)} prompts; pass one per prompt")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        batch = len(prompts)
        device, dtype = self.unet.device, self.unet.dtype
        guided = guidance_scale > 1.0

        # 1. Encode prompt: [uncond, cond] along the batch when guided (cond is the second half)
        embeddings = self.encode_prompt(prompts)
        if guided:
            negatives = [""] * batch if negative_prompt is None else (
                [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
            )
            if len(negatives) != batch:
                raise ConfigError(f"got {len(negatives)} negative prompts for {batch} prompts")
            embeddings = torch.cat([self.encode_prompt(negatives), embeddings])

        # 2. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)

        # 3. Prepare latents from the generator(s)
        sample = self.prepare_latents(batch, generator, device, dtype)

        # 4. Denoising loop
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([sample, sample]) if guided else sample
            model_input = self.scheduler.scale_model_input(model_input, t)
            prediction = self.unet(model_input, t, encoder_hidden_states=embeddings).sample
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + guidance_scale * (cond - uncond)
            sample = self.scheduler.step(prediction, t, sample).prev_sample

        # 5. Unshuffle back to pixels
        images = sample_to_images(sample, self.unshuffle).clamp(-1.0, 1.0).float()

        # 6. Postprocess
        images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
