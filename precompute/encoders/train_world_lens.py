"""Train the world lens: the world encoder's factor read-out, and the output-lens SAE on its tokens.

The embedded world's output lens must *see* the world: every world concept with a prior
of at least 2% detected by some SAE concept (AUROC of the concept's energy for the world
concept's presence) at 0.9 or more, on images the lens never saw. The paper's lens
(DINOv2 + a 32,000-concept RA-SAE) relies on concepts being laid out along roughly
linear, sparsely combined directions of the energy model's tokens (seed 001, section
3). The shipped world encoder's trunk reads every world concept out linearly from its
pooled tokens, but its patch tokens mix shape, colour and pattern non-additively, and an
SAE on them learns composites (measured: the demo's 64-concept RA-SAE left 27 world
concepts undetected).

Two steps, each a command (``blindspot world train-lens``):

1. ``train_factor_readout``: a small read-out (``WorldEncoderConfig.factor_depth``
   transformer blocks and a linear map) on the frozen trunk, trained on world ground
   truth to write every token as the sum of fixed orthonormal concept directions, each
   weighted by how much of the patch the concept covers (``factor_weights``); the
   encoder's tokens are then the read-out's. Supervised, and said so, like the trunk.
2. ``train_world_sae``: an SAE on those tokens of world images (unsupervised: it never
   sees the directions), scored for detectability on a held-out world seed.

The demo's lens takes a third way (``readout="heads"``): no read-out to train, the tokens are the
trunk's own heads' predictions (``WorldEncoder.head_tokens``, one coordinate per world concept), each
split into one token per concept family before the SAE (``bench/world_lens_tokens.py`` measures why:
an SAE on tokens that hold shape, colour, pattern, count, size and position of an object at once
learns their combinations, one that sees one family per token learns the concepts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup

from precompute.analysis.labels import auroc_matrix
from precompute.encoders.train_world_encoder import encode_set, render_training_set
from precompute.encoders.world_encoder import SHIPPED_WEIGHTS, WorldEncoder, factor_weights
from precompute.errors import ConfigError
from precompute.fileio import write_text_atomic

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
DETECTED_AUROC = 0.9
DETECTABLE_PRIOR = 0.02


def detectability(energies: np.ndarray, presence: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per world concept, the SAE concept whose energy detects it best and that AUROC; the summary that matters.

    ``energies`` (images, K); ``presence`` (images, world concepts) 0/1 in the order of ``names``.
    """
    from precompute.world.concepts import marginal_frequencies

    prior = marginal_frequencies()
    auc = auroc_matrix(energies, presence.astype(bool))  # (K, world)
    best, arg = auc.max(axis=0), auc.argmax(axis=0)
    table = [{"world_concept": n, "prior": round(prior[n], 4), "concept": int(a), "auroc": round(float(b), 4)}
             for n, a, b in zip(names, arg, best)]
    needed = [row for row in table if row["prior"] >= DETECTABLE_PRIOR]
    return {"min_auroc": min(r["auroc"] for r in needed), "mean_auroc": float(np.mean([r["auroc"] for r in needed])),
            "undetected": [r["world_concept"] for r in needed if r["auroc"] < DETECTED_AUROC], "table": table}


def train_factor_readout(out_dir: str | Path, trunk: str | Path = SHIPPED_WEIGHTS, *, depth: int = 1,
                         seed: int = 1000, n_images: int = 8000, n_eval: int = 2000, steps: int = 3000,
                         batch_size: int = 128, lr: float = 2e-3, threads: int | None = 1,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Train the factor read-out on the frozen trunk at ``trunk`` and save the whole encoder to ``out_dir``.

    Training images: world seed ``seed`` (rendered once, with the extras localised);
    evaluation: ``n_eval`` images of seed ``seed + 1``, where every concept's *oracle*
    energy (the tokens' projections on its direction, summed) is scored for
    detectability: the ceiling an SAE on these tokens can reach.
    """
    if depth < 1:
        raise ConfigError(f"the factor read-out needs at least one block, got depth={depth}")
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    base = WorldEncoder.from_pretrained(trunk)
    model = WorldEncoder(replace(base.config, factor_depth=depth))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not name.startswith("factor_") and name != "concept_basis" for name in missing):
        raise ConfigError(f"{trunk} is not a world-encoder trunk: missing {missing}, unexpected {unexpected}")
    config = model.config
    trained = [p for n, p in model.named_parameters() if n.startswith("factor_")]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("factor_"))
    model.eval()  # the trunk's batch norms keep their statistics; the read-out has none

    def tokens_and_targets(data):
        with torch.no_grad():
            tokens = encode_set(model, data.images, batch_size=250, trunk=True)
        weights = factor_weights(config, torch.from_numpy(data.presence).float(),
                                 torch.from_numpy(data.cover).flatten(2))
        return tokens, weights @ model.concept_basis

    train = render_training_set(seed, n_images, config)
    tokens, targets = tokens_and_targets(train)
    log.info("rendered and encoded %d training images in %.0f s", n_images, time.perf_counter() - started)
    optimiser = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimiser, max(1, steps // 20), steps)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for step in range(steps):
        index = torch.randint(0, n_images, (batch_size,), generator=generator)
        loss = (model.factor_readout(tokens[index]) - targets[index]).square().sum(dim=-1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": round(float(loss.detach()), 5)})
            if progress is not None:
                progress({"phase": "train", **history[-1], "steps": steps})
    held_out = render_training_set(seed + 1, n_eval, config)
    test_tokens, test_targets = tokens_and_targets(held_out)
    with torch.no_grad():
        factor = torch.cat([model.factor_readout(test_tokens[i:i + 500]) for i in range(0, n_eval, 500)])
        oracle = (factor @ model.concept_basis.T).clamp_min(0).sum(dim=1).numpy()  # (images, concepts)
    scores = detectability(oracle, held_out.presence, config.concepts)
    oracle_own = [row["auroc"] if row["concept"] == i else None for i, row in enumerate(scores["table"])]
    path = model.save_pretrained(out_dir)
    report = {
        "settings": {"trunk": str(trunk), "depth": depth, "seed": seed, "n_images": n_images, "n_eval": n_eval,
                     "steps": steps, "batch_size": batch_size, "lr": lr, "threads": torch.get_num_threads()},
        "trained_parameters": sum(p.numel() for p in trained),
        "weights_bytes": (path / "model.safetensors").stat().st_size,
        "held_out": {"mse": round(float((factor - test_targets).square().sum(-1).mean()), 5),
                     "target_norm2": round(float(test_targets.square().sum(-1).mean()), 5),
                     "oracle": {k: v for k, v in scores.items() if k != "table"},
                     "oracle_per_concept": {row["world_concept"]: row["auroc"] for row in scores["table"]},
                     "oracle_is_own_direction": sum(x is not None for x in oracle_own)},
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }
    write_text_atomic(Path(out_dir) / "factor_training.json", json.dumps(report, indent=2) + "\n")
    return report


def world_images(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` images of ``World(seed)`` (uint8) and their ground truth (images, world concepts) 0/1."""
    from precompute.world import World
    from precompute.world.concepts import CONCEPTS
    from precompute.world.truth import concept_matrix

    world = World(seed=seed)
    samples = world.sample_many(0, n)
    return (np.stack([s.image for s in samples]), concept_matrix(s.scene for s in samples),
            [c.name for c in CONCEPTS])


def image_tokens(energy_model: Any, images: np.ndarray, batch_size: int = 250) -> torch.Tensor:
    """(images, tokens, dim) float32 tokens of uint8 ``images`` under ``energy_model``, ``batch_size`` at a time."""
    return torch.cat([energy_model.encode(images[i:i + batch_size]).tokens.float()
                      for i in range(0, len(images), batch_size)])


def train_world_sae(out_dir: str | Path, encoder: str | Path = SHIPPED_WEIGHTS, *, variant: str = "topk",
                    n_concepts: int = 64, k: int = 8, seed: int = 1002, n_images: int = 6000, n_eval: int = 2000,
                    epochs: float = 10.0, batch_size: int = 1024, lr: float = 5e-4, sae_seed: int = 0,
                    readout: str = "trunk", aggregation: str = "sum", threads: int | None = 1,
                    progress: Progress | None = None,
                    **sae_settings: Any) -> dict[str, Any]:
    """Train the output-lens SAE on the tokens of ``n_images`` images of world ``seed``; score it on ``seed + 1``.

    ``readout``: the encoder's tokens the SAE reads (``WorldEnergyModel``): ``"trunk"``, or ``"heads"``, where
    each token is split into one per concept family for training and a position's codes are the sum over its
    families, as the lens computes them (``Lens.token_codes``). ``aggregation``: the energy the held-out
    detectability is scored on (``encode.energy_aggregation``; the SAE does not depend on it). Writes the SAE (``config.json`` +
    ``model.safetensors``) and ``training.json`` (the settings, the training report and the held-out
    detectability table) to ``out_dir``.
    """
    from precompute.encoders.base import training_rows
    from precompute.encoders.lens import Lens
    from precompute.encoders.world_encoder import WorldEnergyModel
    from precompute.sae import build_sae
    from precompute.sae.train import TrainConfig, train_sae

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    energy_model = WorldEnergyModel(encoder, readout=readout)
    images, _, _ = world_images(seed, n_images)
    rows = training_rows(image_tokens(energy_model, images), energy_model.token_groups)
    torch.manual_seed(sae_seed)
    sae = build_sae(variant, input_dim=rows.shape[-1], n_concepts=n_concepts, k=k, **sae_settings)
    train_config = TrainConfig(batch_size=batch_size, epochs=epochs, lr=lr, seed=sae_seed, log_every=50,
                               checkpoint_every=10 ** 9)
    report = train_sae(sae, rows, train_config,
                       progress=(lambda m: progress({"phase": "sae", **m})) if progress else None)
    test_images, presence, names = world_images(seed + 1, n_eval)
    lens = Lens.from_parts(energy_model, sae, patch_tokens_only=False, aggregation=aggregation)
    with torch.no_grad():
        energies = torch.cat([lens.energy(lens.token_codes(chunk))
                              for chunk in image_tokens(energy_model, test_images).split(100)])
    scores = detectability(energies.numpy(), presence, names)
    path = sae.save_pretrained(out_dir)
    document = {
        "settings": {"encoder": str(encoder), "readout": readout, "aggregation": aggregation, "variant": variant, "n_concepts": n_concepts,
                     "k": k, "seed": seed,
                     "n_images": n_images, "n_eval": n_eval, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                     "sae_seed": sae_seed, **sae_settings},
        "train": {key: report.final.get(key) for key in ("explained_variance", "l0", "dead_fraction", "mse")},
        "steps": report.steps,
        "held_out": scores,
        "seconds": round(time.perf_counter() - started, 1),
        "weights_bytes": (path / "model.safetensors").stat().st_size,
    }
    write_text_atomic(Path(out_dir) / "training.json", json.dumps(document, indent=2) + "\n")
    return document
