"""Train the embedded world's generator (``WorldPipeline``) on world images, resumably.

The data are items of ``World(seed=2000)`` rendered at 64x64 and area-downsampled
to the model's 32x32 (sharper edges than rendering at 32), rendered once and
cached in the work folder, with their captions. Training is the Stable Diffusion
recipe at toy scale: v-prediction on a cosine-schedule ``DDPMScheduler`` (read
from the pipeline's own scheduler config, so training and inference share the
betas), min-SNR-5 loss weighting (faster convergence), 10% empty captions for
classifier-free guidance, AdamW with warmup and cosine decay, and an EMA of the
UNet and text encoder, which is what gets saved.

Every ``checkpoint_every`` steps the full training state goes to the work folder
as safetensors + JSON (no pickles) and the EMA pipeline is exported to
``out_dir``, so a usable model exists whenever the run is stopped. Batches and
noise are drawn from generators seeded by ``(seed, step)``, so a resumed run
draws the same batches it would have drawn.

Run: ``python -m precompute.generators.train_world_model --out DIR --steps N``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file

from precompute.errors import ConfigError
from precompute.fileio import write_text_atomic
from precompute.generators.world_model import (
    IMAGE_SIZE,
    WorldModelConfig,
    WorldPipeline,
    build_world_pipeline,
    images_to_sample,
)
from precompute.world import World

log = logging.getLogger(__name__)

WORLD_SEED = 2000  # training world; other stages evaluate on other seeds
RENDER_SIZE = 64
SAMPLE_CAPTIONS = (
    "a red circle on a white background",
    "two blue squares on grass",
    "a yellow star on a wooden table",
    "a green triangle against a blue sky",
    "three purple hearts on a dark background",
    "a striped orange hexagon on a brick wall",
    "a pink ring in front of a checkerboard background",
    "four black crosses on a page of text",
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a world-model run; saved beside its checkpoints."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    n_images: int = 48_000
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_images", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.caption_dropout < 1 or not 0 < self.ema_decay < 1 or self.lr <= 0:
            raise ConfigError(
                f"need 0 <= caption_dropout < 1, 0 < ema_decay < 1, lr > 0; got "
                f"{self.caption_dropout!r}, {self.ema_decay!r}, {self.lr!r}"
            )

    def learning_rate(self, step: int) -> float:
        """Linear warmup, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def render_training_set(n: int, work_dir: Path, advance: Callable[[int], None] | None = None,
                        size: int = IMAGE_SIZE):
    """``n`` world images (N, size, size, 3) uint8 and their captions, cached in ``work_dir``."""
    images_path, captions_path = work_dir / f"images-{n}-{size}.npy", work_dir / f"captions-{n}.json"
    if images_path.exists() and captions_path.exists():
        return np.load(images_path), json.loads(captions_path.read_text(encoding="utf-8"))
    world = World(seed=WORLD_SEED, size=RENDER_SIZE, noise=0.02)
    images = np.empty((n, size, size, 3), np.uint8)
    captions: list[str] = []
    chunk = 1000
    for start in range(0, n, chunk):
        samples = world.sample_many(start, min(chunk, n - start))
        big = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float()
        small = F.avg_pool2d(big, RENDER_SIZE // size)  # area downsample: anti-aliased (none at 64)
        images[start : start + len(samples)] = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        captions += [s.caption for s in samples]
        if advance:
            advance(len(samples))
        log.info("rendered %d / %d training images", start + len(samples), n)
    np.save(images_path, images)
    write_text_atomic(captions_path, json.dumps(captions))
    return images, captions


class _Ema:
    """Exponential moving average of a module's parameters (with the usual warmup)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value, 1 - decay)
            else:
                self.shadow[key].copy_(value)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state flattened to safetensors-able tensors plus JSON-able groups."""
    state = optimizer.state_dict()
    tensors = {f"{idx}.{name}": value for idx, entry in state["state"].items() for name, value in entry.items()}
    return tensors, state["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _save_checkpoint(work_dir: Path, pipe: WorldPipeline, emas: dict, optimizer, step: int, history: list) -> None:
    save_file({k: v.contiguous() for k, v in pipe.unet.state_dict().items()}, work_dir / "unet.safetensors")
    save_file({k: v.contiguous() for k, v in pipe.text_encoder.state_dict().items()}, work_dir / "text_encoder.safetensors")
    for name, ema in emas.items():
        save_file({k: v.contiguous() for k, v in ema.shadow.items()}, work_dir / f"ema_{name}.safetensors")
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, work_dir / "optimizer.safetensors")
    write_text_atomic(work_dir / "state.json", json.dumps({"step": step, "param_groups": groups, "history": history}))


@torch.no_grad()
def warm_start(pipe: WorldPipeline, trained: WorldPipeline) -> None:
    """Copy ``trained``'s weights into ``pipe`` where they fit, mapping the UNet's first and last convolution
    across pixel-unshuffle factors, so ``pipe`` starts as ``trained`` upsampled (nearest).

    A sample channel of factor f is (colour c, row i, column j) of an f x f pixel block
    (index c f^2 + i f + j). With f = 2r for the trained model's r, the pixel at (i, j) of
    a new block lies in sub-block (i // 2, j // 2) of the old one: the input convolution
    averages the four new channels of an old channel (weight / 4), and the output
    convolution writes the old channel's value to all four.
    """
    text = trained.text_encoder.state_dict()
    if {k: v.shape for k, v in text.items()} != {k: v.shape for k, v in pipe.text_encoder.state_dict().items()}:
        raise ConfigError("the trained model's text encoder has another shape; it cannot warm-start this one")
    pipe.text_encoder.load_state_dict(text)
    old, new = trained.unshuffle, pipe.unshuffle
    if new % old or new // old not in (1, 2):
        raise ConfigError(f"a model of unshuffle {old} can warm-start one of {old} or {2 * old}, not {new}")
    ratio = new // old
    index = torch.tensor([c * old * old + (i // ratio) * old + (j // ratio)
                          for c in range(3) for i in range(new) for j in range(new)])
    state = trained.unet.state_dict()
    target = pipe.unet.state_dict()
    state["conv_in.weight"] = state["conv_in.weight"][:, index] / ratio**2
    state["conv_out.weight"] = state["conv_out.weight"][index]
    state["conv_out.bias"] = state["conv_out.bias"][index]
    mismatched = [k for k, v in state.items() if k not in target or target[k].shape != v.shape]
    if mismatched:
        raise ConfigError(f"the trained model's UNet does not fit this one: {mismatched[:5]}")
    pipe.unet.load_state_dict(state)


def export_ema_pipeline(pipe: WorldPipeline, emas: dict, out_dir: Path) -> None:
    """Save ``pipe`` with its EMA weights swapped in (the live weights are restored after)."""
    live = {name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()} for name in emas}
    for name, ema in emas.items():
        getattr(pipe, name).load_state_dict(ema.shadow)
    pipe.save_pretrained(out_dir)
    for name, weights in live.items():
        getattr(pipe, name).load_state_dict(weights)


def train_world_model(
    out_dir: str | Path,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    resume: bool = True,
    progress: Callable[[int], None] | None = None,
    checkpoint_every: int = 100,
    work_dir: str | Path | None = None,
    model_config: WorldModelConfig | None = None,
    n_images: int = 48_000,
    deadline: float | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train a ``WorldPipeline`` for ``steps`` steps and save its EMA weights to ``out_dir``.

    ``work_dir`` (default ``<out_dir>.work``) keeps the rendered training set and the
    resumable checkpoints; with ``resume`` a run continues from the last one.
    ``deadline`` (a ``time.time()`` value) stops early, after a final export.
    ``progress`` is called with the number of steps done since the last call.
    ``init_from``: a trained world model to start from (``warm_start``), e.g. the 32 px
    model when training a 64 px one.
    """
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         checkpoint_every=checkpoint_every, n_images=n_images)
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    model_config = model_config or WorldModelConfig()
    if model_config.block_out_channels[0] < model_config.sample_channels:
        # conv_in maps each sample position's 3 f^2 values to the first level's channels; fewer cannot carry
        # per-pixel detail: a 64 px run at f = 4 with 32 channels kept its samples noisy after 1,400 steps
        log.warning("block_out_channels[0] = %d is below the %d values per position of a %dx%d pixel-unshuffle: "
                    "the model will not learn per-pixel detail; use at least %d channels at the first level",
                    model_config.block_out_channels[0], model_config.sample_channels, model_config.unshuffle,
                    model_config.unshuffle, model_config.sample_channels)
    write_text_atomic(work / "config.json", json.dumps({"train": asdict(config), "model": model_config.to_dict()}))

    images, captions = render_training_set(config.n_images, work, size=model_config.image_size)
    pipe = build_world_pipeline(work / "tokenizer", model_config, seed=seed)
    if init_from is not None and not (resume and (work / "state.json").exists()):
        warm_start(pipe, WorldPipeline.from_pretrained(init_from))
        log.info("weights initialised from %s", init_from)
    ids = pipe.tokenize(captions)  # (N, 32), tokenised once
    empty_ids = pipe.tokenize([""])[0]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    loss_weight = torch.clamp(snr, max=config.min_snr_gamma) / (snr + 1)  # min-SNR for v-prediction

    unet, text_encoder = pipe.unet, pipe.text_encoder
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    emas = {"unet": _Ema(unet, config.ema_decay), "text_encoder": _Ema(text_encoder, config.ema_decay)}
    step, history = 0, []
    if resume and (work / "state.json").exists():
        state = json.loads((work / "state.json").read_text(encoding="utf-8"))
        unet.load_state_dict(load_file(work / "unet.safetensors"))
        text_encoder.load_state_dict(load_file(work / "text_encoder.safetensors"))
        for name, ema in emas.items():
            ema.shadow = load_file(work / f"ema_{name}.safetensors")
        _load_optimizer(optimizer, load_file(work / "optimizer.safetensors"), state["param_groups"])
        step, history = state["step"], state["history"]
        log.info("resumed from step %d", step)

    unet.train()
    text_encoder.train()
    window, started = [], time.time()
    while step < config.steps:
        rng = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        batch = torch.randint(len(pixels), (config.batch_size,), generator=rng)
        clean = images_to_sample(pixels[batch].float() / 127.5 - 1.0, model_config.unshuffle)
        tokens = ids[batch].clone()
        dropped = torch.rand(config.batch_size, generator=rng) < config.caption_dropout
        tokens[dropped] = empty_ids
        noise = torch.randn(clean.shape, generator=rng)
        t = torch.randint(noise_scheduler.config.num_train_timesteps, (config.batch_size,), generator=rng)
        noisy = noise_scheduler.add_noise(clean, noise, t)
        target = noise_scheduler.get_velocity(clean, noise, t)

        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate(step)
        prediction = unet(noisy, t, encoder_hidden_states=text_encoder(tokens).last_hidden_state).sample
        per_image = (prediction - target).pow(2).mean(dim=(1, 2, 3))
        loss = (per_image * loss_weight[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        for name, ema in emas.items():
            ema.update(getattr(pipe, name), step)
        step += 1
        window.append(loss.item())
        if progress:
            progress(1)
        if step % 10 == 0:
            history.append([step, round(sum(window) / len(window), 5)])
            log.info("step %d/%d loss %.4f lr %.2e %.2f s/step", step, config.steps, history[-1][1],
                     config.learning_rate(step), (time.time() - started) / len(window))
            window, started = [], time.time()
        late = deadline is not None and time.time() > deadline
        if step % config.checkpoint_every == 0 or step == config.steps or late:
            _save_checkpoint(work, pipe, emas, optimizer, step, history)
            export_ema_pipeline(pipe, emas, out)
            log.info("checkpoint at step %d; EMA pipeline exported to %s", step, out)
        if late:
            log.info("deadline reached at step %d", step)
            break
    return out


def write_sample_grid(
    pipe: WorldPipeline, path: str | Path, captions=SAMPLE_CAPTIONS, seeds=(0, 1, 2, 3), scale: int = 4,
    num_inference_steps: int = 25, guidance_scale: float = 3.0,
) -> Path:
    """A grid image, one row per caption and one column per seed, upscaled (nearest) to be visible."""
    from PIL import Image

    prompts = [c for c in captions for _ in seeds]
    generators = [torch.Generator().manual_seed(s) for _ in captions for s in seeds]
    images = pipe(prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                  generator=generators, output_type="np").images
    side = pipe.image_size
    tiles = (images * 255).round().astype(np.uint8).reshape(len(captions), len(seeds), side, side, 3)
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(len(captions) * side, len(seeds) * side, 3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder the EMA pipeline is saved to")
    parser.add_argument("--work-dir", default=None, help="training set cache and checkpoints")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-images", type=int, default=48_000)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--grid", default=None, help="write a sample grid PNG here at the end")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="pixels generated (32 or 64)")
    parser.add_argument("--unshuffle", type=int, default=2, help="pixel-unshuffle factor (4 at 64 px)")
    parser.add_argument("--channels", default="32,64,64", help="UNet block_out_channels, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init-from", default=None, help="a trained world model to start from (warm start)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    model_config = WorldModelConfig(block_out_channels=tuple(int(c) for c in args.channels.split(",")),
                                    image_size=args.image_size, unshuffle=args.unshuffle)
    out = train_world_model(
        args.out, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, resume=not args.no_resume,
        checkpoint_every=args.checkpoint_every, work_dir=args.work_dir, n_images=args.n_images, deadline=deadline,
        model_config=model_config, init_from=args.init_from,
    )
    if args.grid:
        pipe = WorldPipeline.from_pretrained(out)
        pipe.set_progress_bar_config(disable=True)
        log.info("sample grid: %s", write_sample_grid(pipe, args.grid))


if __name__ == "__main__":
    main()
