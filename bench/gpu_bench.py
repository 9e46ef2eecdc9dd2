"""The paper's models at real size with random weights, timed on whatever device is present, and its run projected.

    .venv/bin/python bench/gpu_bench.py [--size full|reduced|smallest] [--device auto|cpu|cuda] [--threads N]
                                        [--json OUT]

What is timed (random weights: the speed of a network does not depend on its values):

* generate: Stable Diffusion 1.5's UNet (``UNet2DConditionModel`` with SD 1.5's config,
  860 M parameters) at 512x512 (a 64x64 latent) under classifier-free guidance (a
  batch of 2 per image, as guidance 7.5 runs it), one denoising step (x 50 per image);
  and SD 1.5's VAE decoder once per image. fp16 on CUDA (the paper loads fp16), fp32 on
  a CPU. The CLIP text encoder (once per image) is not timed.
* encode: DINOv2-with-registers-base (86 M parameters, a random checkpoint saved and
  loaded through the project's ``load_energy_model``: its preprocessing and forward
  pass) on 512x512 images; and a 32,000-concept SAE's ``encode_codes`` on their 261
  tokens each.
* train: steps of the project's RA-SAE training (``train_sae``: 32,000 concepts, k = 5,
  AdamW, AuxK) on 4,096-token batches of 768-dim tokens.

Projected: the paper's run (seed 001, appendices D and E): 5 generators x 10,000 images,
60,000 images encoded (the 10,000 real and 50,000 generated), and the project's default
SAE training (10 epochs of 2,000,000 tokens in 488 steps of 4,096 = 4,880 steps). Every
generator is costed as SD 1.5 at 50 steps (Kandinsky 2.1 runs 100 decoder steps and a
prior, PixArt-alpha a transformer at 1024 px). The paper reports 202 GPU-hours on
H100/H200s in all: about 100 for generation, 24 for the RA-SAE, 15 for the energy
differences and 15 for the datapoint-level analysis. On a CPU the projection is in
hours of that CPU, not GPU-hours.

Sizes: ``full`` (the default with CUDA) is the above. ``reduced`` (the default on a CPU)
runs the same UNet, VAE and DINOv2 with fewer repetitions and smaller batches, and the
RA-SAE with 2,048 candidate points instead of 32,000 on 1,024-token batches (its
32,000 x 32,000 ``W`` alone is 4 GB in fp32, 16 GB with its gradient and AdamW's
state); a row not measured at full size says so, and its projection is a lower bound.
``smallest`` shrinks every model so the script runs in seconds (its test); its numbers
are not measurements of the paper's models.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_GPU_HOURS = 202
PAPER_HOURS = {"generate": 100, "train": 24, "encode": 15}  # appendix E (the datapoint-level 15 h is not modelled)
GENERATORS, PAIRS, STEPS = 5, 10_000, 50
TRAIN_STEPS = 2_000_000 // 4096 * 10  # the project's defaults: encode.train_tokens / train_batch_size x train_epochs
TOKENS, DIM, CONCEPTS, K = 261, 768, 32_000, 5

SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8, "layers_per_block": 2,
             "block_out_channels": (320, 640, 1280, 1280)}
SD15_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
DINOV2_REG_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
                   "patch_size": 14, "image_size": 518, "num_register_tokens": 4}


@dataclass(frozen=True)
class Size:
    name: str
    unet: dict
    latent: int  # latent side (image side / 8)
    text_tokens: int
    vae: dict
    dino: dict
    image: int
    dino_batch: int
    concepts: int
    candidates: int
    sae_batch: int
    repeats: int  # timed repetitions of each model call (after one warm-up call)
    sae_steps: int
    reduced: dict = field(default_factory=dict)  # row -> how it differs from the paper's size


SIZES = {
    "full": Size("full", SD15_UNET, 64, 77, SD15_VAE, DINOV2_REG_BASE, 512, 64, CONCEPTS, CONCEPTS, 4096, 5, 5),
    "reduced": Size("reduced", SD15_UNET, 64, 77, SD15_VAE, DINOV2_REG_BASE, 512, 4, CONCEPTS, 2048, 1024, 1, 2,
                    {"train": "2,048 candidates, 1,024-token batches"}),
    "smallest": Size(
        "smallest",
        {"sample_size": 8, "cross_attention_dim": 16, "attention_head_dim": 2, "layers_per_block": 1,
         "block_out_channels": (8, 16), "norm_num_groups": 8,
         "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
        8, 8,
        {"block_out_channels": (8, 16), "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
         "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2},
        {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_ratio": 2, "patch_size": 14,
         "image_size": 28, "num_register_tokens": 4},
        64, 2, 512, 64, 256, 1, 1,
        {row: "every model shrunk" for row in ("unet", "vae", "dino", "sae_encode", "train")}),
}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``call`` over ``repeats`` runs after one warm-up run."""
    call()
    synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def time_unet(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**size.unet).to(device, dtype).eval()
    latents = torch.randn(2, 4, size.latent, size.latent, device=device, dtype=dtype)  # [uncond, cond]
    text = torch.randn(2, size.text_tokens, size.unet["cross_attention_dim"], device=device, dtype=dtype)
    timestep = torch.tensor(500, device=device)
    with torch.inference_mode():
        step = timed(lambda: unet(latents, timestep, encoder_hidden_states=text).sample, device, size.repeats)
    return {"unet_step_s": step, "unet_parameters": parameters(unet)}


def time_vae(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**size.vae).to(device, dtype).eval()
    latent = torch.randn(1, 4, size.latent, size.latent, device=device, dtype=dtype)
    with torch.inference_mode():
        decode = timed(lambda: vae.decode(latent).sample, device, size.repeats)
    return {"vae_decode_s": decode, "vae_decoder_parameters": parameters(vae.decoder) + parameters(vae.post_quant_conv)}


def time_encoding(size: Size, device: torch.device) -> dict:
    import numpy as np
    from PIL import Image
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    from precompute.encoders import load_energy_model
    from precompute.sae import build_sae

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**size.dino)).save_pretrained(folder)
        model = load_energy_model(folder, device=str(device), dtype="fp32")  # the encode stage's path
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (size.image, size.image, 3), dtype=np.uint8))
                  for _ in range(size.dino_batch)]
        batch = timed(lambda: model.encode(images), device, size.repeats)
        tokens = model.encode(images).tokens
        dino_parameters = parameters(model.model)
    sae = build_sae("topk", input_dim=tokens.shape[-1], n_concepts=size.concepts, k=K).to(device).eval()
    flat = tokens.reshape(-1, tokens.shape[-1]).float()
    with torch.inference_mode():
        codes = timed(lambda: sae.encode_codes(flat), device, size.repeats)
    return {"dino_image_s": batch / size.dino_batch, "sae_encode_image_s": codes / size.dino_batch,
            "tokens_per_image": int(tokens.shape[1]), "dino_parameters": dino_parameters}


def time_training(size: Size, device: torch.device) -> dict:
    from precompute.sae import RASAE, RASAEConfig, TrainConfig, train_sae

    def run(steps: int) -> float:
        torch.manual_seed(0)
        sae = RASAE(RASAEConfig(input_dim=DIM if size.name != "smallest" else 32, n_concepts=size.concepts, k=K,
                                n_candidates=size.candidates))
        tokens = torch.randn(size.sae_batch * steps, sae.input_dim)
        config = TrainConfig(batch_size=size.sae_batch, steps=steps, log_every=steps, checkpoint_every=10 * steps,
                             device=str(device), dead_after_tokens=size.sae_batch)
        synchronise(device)
        start = time.perf_counter()
        train_sae(sae, tokens, config)
        synchronise(device)
        return time.perf_counter() - start

    warm = run(1)  # setup, the first step and the decoder-bias initialisation
    total = run(1 + size.sae_steps)
    return {"sae_step_s": max(total - warm, 0.0) / size.sae_steps, "sae_first_step_s": warm}


def projection(measured: dict, size: Size) -> list[dict]:
    """Rows: what was timed, per what, how many of those the paper's run has, projected hours."""
    image_s = STEPS * measured["unet_step_s"] + measured["vae_decode_s"]
    side = 8 * size.latent
    encoded = (GENERATORS + 1) * PAIRS
    rows = [
        ("generate", "unet", f"UNet step ({side} px, guided batch of 2) x {STEPS}", "image",
         STEPS * measured["unet_step_s"], GENERATORS * PAIRS),
        ("generate", "vae", f"VAE decode ({side} px)", "image", measured["vae_decode_s"], GENERATORS * PAIRS),
        ("encode", "dino", f"DINOv2-with-registers ({measured['dino_parameters'] / 1e6:.1f} M, batch {size.dino_batch})",
         "image",
         measured["dino_image_s"], encoded),
        ("encode", "sae_encode", f"SAE encode_codes ({measured['tokens_per_image']} tokens, {size.concepts:,} concepts)",
         "image", measured["sae_encode_image_s"], encoded),
        ("train", "train", f"RA-SAE training step ({size.sae_batch:,} tokens, {size.concepts:,} concepts, "
         f"{size.candidates:,} candidates)", "step", measured["sae_step_s"], TRAIN_STEPS),
    ]
    table = []
    for stage, key, what, unit, seconds, count in rows:
        table.append({"stage": stage, "what": what, "unit": unit, "seconds": seconds, "count": count,
                      "hours": seconds * count / 3600, "reduced": size.reduced.get(key, "")})
    measured["generate_image_s"] = image_s
    return table


def report(measured: dict, table: list[dict], device: torch.device, size: Size) -> str:
    hours_kind = "GPU-hours" if device.type == "cuda" else "CPU-hours of this machine"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
             f"size {size.name}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
             f"parameters: UNet {measured['unet_parameters'] / 1e6:.1f} M, VAE decoder "
             f"{measured['vae_decoder_parameters'] / 1e6:.1f} M, DINOv2 {measured['dino_parameters'] / 1e6:.1f} M",
             "", f"| stage | timed | s per unit | units in the paper's run | projected {hours_kind} | size |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in table:
        lines.append(f"| {row['stage']} | {row['what']} | {row['seconds']:.4g} per {row['unit']} | {row['count']:,} | "
                     f"{row['hours']:,.1f} | {row['reduced'] or 'full'} |")
    by_stage = {stage: sum(r["hours"] for r in table if r["stage"] == stage) for stage in PAPER_HOURS}
    total = sum(by_stage.values())
    lower = (" (shrunk models: a check that the bench runs, not a measurement of the paper's models)"
             if size.name == "smallest" else
             " (a lower bound: some rows at reduced size)" if any(r["reduced"] for r in table) else "")
    lines += ["", f"projected {hours_kind}: " + ", ".join(f"{s} {h:,.1f} (paper {PAPER_HOURS[s]})"
                                                     for s, h in by_stage.items())
              + f"; total {total:,.1f}{lower}, against the paper's {PAPER_GPU_HOURS} GPU-hours in all"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: full with CUDA, else reduced")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    size = SIZES[args.size or ("full" if device.type == "cuda" else "reduced")]
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    measured = {**time_unet(size, device, dtype), **time_vae(size, device, dtype), **time_encoding(size, device),
                **time_training(size, device)}
    table = projection(measured, size)
    print(report(measured, table, device, size))
    result = {"device": str(device), "size": size.name, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "measured": measured, "projection": table,
              "paper_gpu_hours": PAPER_GPU_HOURS}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
