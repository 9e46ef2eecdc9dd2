"""Semantic image embeddings for the internal lens, and feature labels.

RAIGen (seed 000, "Key Designs", (b)) measures a feature's distinctiveness in CLIP's
image-embedding space; for the embedded world the world encoder plays CLIP's part
(DESIGN.md section 2). Embeddings of a generator's images are computed once and kept
in ``WORK/internal/semantic-<digest>.safetensors``, keyed by the images and the
model's weights.

A feature's label is what its activation is most associated with: for the world
encoder, the world concept whose predicted presence rises most when images are
weighted by the feature's activation; otherwise the caption word with the largest
lift (``precompute.analysis.labels.caption_words``); '' when nothing stands out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from precompute.encoders.world_encoder import WorldEnergyModel
from precompute.fileio import atomic_path
from precompute.stages.common import StageContext, digest_of, weights_identity

EMBED_BATCH = 64
MIN_LABEL_GAIN = 0.1  # a world concept names a feature when its weighted presence is this much above the mean


@dataclass(frozen=True)
class Semantic:
    """(images, D) L2-normalised embeddings; for the world encoder also (images, C) concept probabilities."""

    embeddings: Tensor
    concept_probabilities: Tensor | None = None
    concept_names: tuple[str, ...] = ()


def _model(ctx: StageContext, spec: str, device: str):
    key = f"semantic:{spec}:{device}"
    if key not in ctx.models:
        from precompute.encoders import load_energy_model

        ctx.models[key] = load_energy_model(spec, device=device, dtype="fp32")
    return ctx.models[key]


def _identity(spec: str) -> str:
    if spec == "world":
        from precompute.encoders.world_encoder import SHIPPED_WEIGHTS

        return weights_identity(SHIPPED_WEIGHTS)
    return weights_identity(spec)


@torch.no_grad()
def _world_pass(model: WorldEnergyModel, images) -> tuple[Tensor, Tensor]:
    """``model.embed(images)`` and ``model.concept_probabilities(images)`` from one forward pass of the encoder."""
    tokens = model.encode(images)
    embedding = F.normalize(tokens.tokens[:, tokens.patch_mask].float().mean(dim=1), dim=-1)
    probability = torch.sigmoid(model.model.concept_logits(tokens.tokens)["pooled"].float())
    return embedding.cpu(), probability.cpu()


def semantic_embeddings(ctx: StageContext, spec: str, images_digest: str, paths: list[Path], device: str) -> Semantic:
    """Embeddings of ``paths`` under the semantic model ``spec`` ('world', or a CLIP id or folder), cached."""
    from precompute.images import load_images

    cache = ctx.work / "internal" / f"semantic-{digest_of(images_digest, spec, _identity(spec), len(paths))}"
    if (cache / "embeddings.safetensors").is_file():
        tensors = load_file(cache / "embeddings.safetensors")
        names = tuple((cache / "concepts.txt").read_text().splitlines()) if "probabilities" in tensors else ()
        return Semantic(tensors["embeddings"], tensors.get("probabilities"), names)
    model = _model(ctx, spec, device)
    world = isinstance(model, WorldEnergyModel)
    embeddings, probabilities = [], []
    with ctx.progress(len(paths), f"semantic embeddings ({spec})", "img") as advance:
        for start in range(0, len(paths), EMBED_BATCH):
            images = load_images(paths[start:start + EMBED_BATCH])
            if world:
                embedding, probability = _world_pass(model, images)
                probabilities.append(probability)
            else:
                embedding = model.embed(images).float().cpu()
            embeddings.append(embedding)
            advance(len(images))
    tensors = {"embeddings": torch.cat(embeddings)}
    names: tuple[str, ...] = ()
    if world:
        tensors["probabilities"] = torch.cat(probabilities)
        names = tuple(model.config.concepts)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "concepts.txt").write_text("\n".join(names))
    with atomic_path(cache / "embeddings.safetensors") as temp:
        save_file(tensors, str(temp))
    return Semantic(tensors["embeddings"], tensors.get("probabilities"), names)


def feature_labels(image_sums: Tensor, semantic: Semantic, captions: list[str]) -> list[str]:
    """One label per feature from its per-image activation mass ``image_sums`` (images, G)."""
    n_features = image_sums.shape[1]
    if semantic.concept_probabilities is not None:
        probabilities = semantic.concept_probabilities.double()
        mass = image_sums.double()
        weighted = (mass.T @ probabilities) / mass.sum(dim=0).clamp_min(1e-300)[:, None]  # (G, C)
        gain, best = (weighted - probabilities.mean(dim=0)[None, :]).max(dim=1)
        live = (mass.sum(dim=0) > 0) & (gain > MIN_LABEL_GAIN)
        return [semantic.concept_names[b] if ok else "" for b, ok in zip(best.tolist(), live.tolist())]
    from precompute.analysis.labels import caption_words

    words, _ = caption_words(sp.csr_array(image_sums.double().numpy()), captions, top=1)
    return [top[0][0] if top else "" for top in words][:n_features]
