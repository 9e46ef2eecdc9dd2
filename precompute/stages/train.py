"""Stage train (output lens): an SAE on real-image tokens when the config gives none.

Tokens of the real images (all of them, or a seeded sample of ``encode.train_tokens``)
are written as safetensors shards, then the SAE of ``encode.sae_variant`` is trained
on them with seed 001 appendix F.1's optimiser (AdamW, warm-up, cosine decay, an
auxiliary loss for dead latents). Resumable: token shards and SAE checkpoints persist.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from precompute.config import EncodeConfig
from precompute.encoders.base import training_rows
from precompute.images import load_images
from precompute.manifest import Manifest
from precompute.stages.common import StageContext, digest_of, resolve_device
from precompute.stages.images import image_sets

TOKEN_SHARD = 200_000


def jpeg_quality(encode: EncodeConfig) -> int | None:
    """The JPEG quality images are round-tripped at before the energy model, or None (``encode.jpeg_roundtrip``)."""
    return encode.jpeg_quality if encode.jpeg_roundtrip else None


def trained_sae_dir(ctx: StageContext) -> Path:
    encode = ctx.config.encode
    lens = {k: v for k, v in encode.model_dump(mode="json").items()
            if k not in ("exemplars", "patch_tokens_only", "energy_aggregation", "device", "batch_size")}
    return ctx.work / "train" / f"sae-{digest_of(ctx.sample_digest(), lens, ctx.energy_identity())}"


def sae_path(ctx: StageContext) -> Path:
    """The output-lens SAE the encode stage uses: the given one, or the one this stage trains."""
    return ctx.config.encode.sae or trained_sae_dir(ctx)


def _sae_settings(encode: EncodeConfig) -> dict:
    settings: dict = {"n_concepts": encode.n_concepts, "k": encode.k}
    if encode.sae_variant == "matryoshka":
        first = max(encode.n_concepts // 16, 1)
        settings["group_sizes"] = [first, encode.n_concepts - first]
    return settings


def run_train(ctx: StageContext) -> dict | None:
    """Train the output-lens SAE unless the config names one; return the manifest (None if given)."""
    from precompute.sae import train_sae_from_tokens_file

    encode = ctx.config.encode
    if encode.sae is not None:
        return None
    out = trained_sae_dir(ctx)
    manifest = Manifest("train", "output-lens-sae", encode.model_dump(mode="json"))
    if (out / "model.safetensors").is_file() and (out / "train_report.json").is_file():
        report = json.loads((out / "train_report.json").read_text())
        manifest.notes.append("reused the SAE trained by an earlier run")
    else:
        # Shared by every SAE trained on the same tokens (SAEs of other seeds, sizes or variants).
        jpeg = () if jpeg_quality(encode) is None else (("jpeg", encode.jpeg_quality),)
        token_dir = out.parent / ("tokens-" + digest_of(ctx.sample_digest(), encode.energy_model, encode.dtype,
                                                          encode.train_tokens, ctx.config.run.seed,
                                                          ctx.energy_identity(), *jpeg))
        if not (token_dir / "done.json").is_file():
            _write_tokens(ctx, token_dir)
        log_every = 10
        with ctx.progress(None, f"train {encode.sae_variant} SAE ({encode.n_concepts} concepts)", "step") as advance:
            report = train_sae_from_tokens_file(
                token_dir, encode.sae_variant, _sae_settings(encode),
                {"batch_size": encode.train_batch_size, "epochs": encode.train_epochs, "lr": encode.lr,
                 "device": resolve_device(encode.device), "seed": encode.sae_seed, "log_every": log_every},
                out, resume=True, progress=lambda metrics: advance(log_every),
            ).to_dict()
    final = report.get("final", {})
    manifest.counts.update(steps=report.get("steps", 0), tokens_seen=report.get("tokens_seen", 0))
    for key in ("explained_variance", "l0", "dead_fraction"):
        if key in final:
            manifest.counts[key] = round(float(final[key]), 4)
    return manifest.finish(out.parent / "manifest.json")


def _write_tokens(ctx: StageContext, token_dir: Path) -> None:
    """Energy-model tokens of the real images, sampled down to ``train_tokens``, in shards."""
    encode = ctx.config.encode
    model = ctx.energy_model()
    real = image_sets(ctx)[0]
    groups = model.token_groups
    per_image = model.n_tokens * (1 if groups is None else len(groups))  # at most; a split drops its zero rows
    keep = min(1.0, encode.train_tokens / max(1, per_image * len(real.paths)))
    rng = np.random.default_rng(ctx.config.run.seed)
    token_dir.mkdir(parents=True, exist_ok=True)
    buffer: list[torch.Tensor] = []
    count, shard = 0, 0
    with ctx.progress(len(real.paths), "tokens for SAE training", "img") as advance:
        for start in range(0, len(real.paths), encode.batch_size):
            tokens = model.encode(load_images(real.paths[start:start + encode.batch_size], jpeg_quality(encode))).tokens
            flat = training_rows(tokens.float().cpu(), groups)  # one row per token (and group)
            if keep < 1.0:
                flat = flat[torch.from_numpy(rng.random(flat.shape[0]) < keep)]
            buffer.append(flat)
            count += flat.shape[0]
            if count >= TOKEN_SHARD:
                save_file({"tokens": torch.cat(buffer)}, str(token_dir / f"{shard:05d}.safetensors"))
                buffer, count, shard = [], 0, shard + 1
            advance(tokens.shape[0])
    if buffer:
        save_file({"tokens": torch.cat(buffer)}, str(token_dir / f"{shard:05d}.safetensors"))
    (token_dir / "done.json").write_text(json.dumps({"energy_model": model.describe()}))
