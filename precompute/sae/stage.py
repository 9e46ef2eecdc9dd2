"""The ``blindspot sae train`` stage: token shards on disk in, a trained SAE folder out.

Output folder layout (``out_dir``): ``config.json`` + ``model.safetensors`` (the model),
``train_config.json`` (the stage's inputs, saved next to its outputs),
``train_report.json`` and ``checkpoints/``. The stage is resumable and idempotent: a
killed run continues from its last checkpoint and a finished one returns at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from precompute.errors import ConfigError
from precompute.sae.base import SAEConfig, registered_variants
from precompute.sae.checkpoint import clear_checkpoints, latest_checkpoint
from precompute.sae.data import ShardedTokens
from precompute.sae.rasae import RASAE, kmeans_candidates
from precompute.sae.train import Progress, TrainConfig, TrainReport, train_sae


def train_sae_from_tokens_file(
    tokens_path: str | os.PathLike,
    variant: str,
    sae_config: Mapping[str, Any] | SAEConfig,
    train_config: Mapping[str, Any] | TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    progress: Progress | None = None,
    kmeans_iters: int = 25,
    kmeans_points: int = 200_000,
) -> TrainReport:
    """The ``blindspot sae train`` stage: train a ``variant`` SAE on token shards.

    ``tokens_path`` is a safetensors file with a ``"tokens"`` tensor ``(n, dim)`` or a
    folder of such shards. ``sae_config`` may omit ``input_dim`` (taken from the
    tokens). Writes to ``out_dir``: the model (``config.json`` + ``model.safetensors``),
    ``train_config.json``, ``train_report.json`` and ``checkpoints/``. With
    ``resume=True`` a killed run continues from its last checkpoint and a finished one
    returns at once; ``resume=False`` deletes old checkpoints first. An RA-SAE gets its
    candidate points from k-means of a seeded sample of the tokens.
    """
    train_config = train_config if isinstance(train_config, TrainConfig) else TrainConfig.from_dict(train_config)
    klass = registered_variants().get(variant)
    if klass is None:
        raise ConfigError(f"unknown SAE variant {variant!r}; known variants: {sorted(registered_variants())}")
    source = ShardedTokens(tokens_path, train_config.batch_size, train_config.seed)
    if isinstance(sae_config, SAEConfig):
        values = sae_config.to_dict()
    elif isinstance(sae_config, Mapping):
        values = dict(sae_config)
    else:
        raise ConfigError(f"sae_config must be a mapping or an SAEConfig, got {type(sae_config).__name__}")
    values.setdefault("input_dim", source.dim)
    if values["input_dim"] != source.dim:
        raise ConfigError(
            f"sae_config says input_dim={values['input_dim']} but the tokens in {tokens_path} "
            f"have dimension {source.dim}"
        )
    config = klass.config_class.from_dict(values)

    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    if not resume:
        clear_checkpoints(checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    stage = {"tokens": str(tokens_path), "variant": variant, "sae": config.to_dict(), "train": train_config.to_dict()}
    (out / "train_config.json").write_text(json.dumps(stage, indent=2) + "\n")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        if klass is RASAE and latest_checkpoint(checkpoints) is None:
            sample = source.sample(kmeans_points, train_config.seed)
            candidates = kmeans_candidates(sample, config.n_candidates, kmeans_iters, train_config.seed)
            sae = RASAE(config, candidates=candidates)
        else:
            sae = klass(config)
    report = train_sae(sae, source, train_config, checkpoint_dir=checkpoints, resume=True, progress=progress)
    sae.save_pretrained(out)
    (out / "train_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
