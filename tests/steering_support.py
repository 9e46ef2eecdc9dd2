"""Small real models for the steering tests: an internal SAE on the world model's bottleneck, an output-lens SAE.

The internal SAE is what the ``internal`` stage trains, in miniature: a Matryoshka
BatchTopK SAE fitted for a few dozen steps on ``unet.mid_block`` activations captured
from the shipped world model (every spatial position one sample). The output-lens SAE
is a TopK SAE fitted on world-encoder tokens of rendered world images.
"""

from __future__ import annotations

from pathlib import Path

import torch

POINT = "unet.mid_block"
WORLD_SEED = 7  # world captions the fixtures use; tests prompt with the same world


def world_captions(n: int, seed: int = WORLD_SEED) -> list[str]:
    from precompute.world import World

    return [World(seed=seed).caption(i) for i in range(n)]


def load_world_pipeline():
    from precompute.generators.registry import WORLD_WEIGHTS
    from precompute.generators.world_model import WorldPipeline

    pipeline = WorldPipeline.from_pretrained(WORLD_WEIGHTS)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def capture_bottleneck(pipeline, captions: list[str], steps: int = 4, guidance: float = 3.0) -> torch.Tensor:
    """(positions, channels) activations of ``unet.mid_block``, conditional half, at every denoising step."""
    from precompute.generators.capture import CaptureConfig, apply_capture

    config = CaptureConfig(points=(POINT,), steps=tuple(range(steps)), num_inference_steps=steps, guided=guidance > 1)
    generators = [torch.Generator().manual_seed(i) for i in range(len(captions))]
    with apply_capture(pipeline, config) as recorder:
        pipeline(captions, num_inference_steps=steps, guidance_scale=guidance, generator=generators)
        captured = recorder.take()
    return torch.cat([t.reshape(-1, t.shape[-1]) for t in captured.values()])


def fit_internal_sae(out: Path, pipeline=None, n_prompts: int = 16, train_steps: int = 80) -> Path:
    """A Matryoshka BatchTopK SAE (64 -> 256 features, first group 32) on the world model's bottleneck."""
    from precompute.sae import MatryoshkaConfig, MatryoshkaSAE, TrainConfig, train_sae

    pipeline = pipeline or load_world_pipeline()
    tokens = capture_bottleneck(pipeline, world_captions(n_prompts))
    torch.manual_seed(0)
    sae = MatryoshkaSAE(MatryoshkaConfig(input_dim=tokens.shape[1], n_concepts=256, k=8, group_sizes=(32, 224)))
    train_sae(sae, tokens, TrainConfig(batch_size=256, steps=train_steps, lr=3e-3, log_every=train_steps,
                                       checkpoint_every=10 * train_steps, dead_after_tokens=4096))
    return sae.save_pretrained(out)


def activation_scale(internal_sae: Path, n_prompts: int = 16):
    """Each feature's firing count and typical activation (the internal stage's measure, ``ActivationScale``) on the
    bottleneck the SAE was fitted on."""
    from precompute.internal.codes import pool_codes
    from precompute.sae import load_sae

    positions = capture_bottleneck(load_world_pipeline(), world_captions(n_prompts))
    return pool_codes(load_sae(internal_sae), positions, torch.zeros(positions.shape[0], dtype=torch.long), 1).scale


def fit_output_sae(out: Path, n_images: int = 24) -> Path:
    """A TopK SAE (128 -> 32 concepts, k 4) on world-encoder tokens of rendered world images."""
    from precompute.encoders import load_energy_model
    from precompute.sae import TrainConfig, build_sae, train_sae
    from precompute.world import World

    world = World(seed=WORLD_SEED, size=64)
    images = [world.sample(i).image for i in range(n_images)]
    model = load_energy_model("world")
    tokens = model.encode(images).tokens.float()
    torch.manual_seed(0)
    sae = build_sae("topk", input_dim=model.dim, n_concepts=32, k=4)
    train_sae(sae, tokens, TrainConfig(batch_size=256, steps=40, lr=3e-3, log_every=40, checkpoint_every=400))
    return sae.save_pretrained(out)


def steerable_config(n_items: int = 8):
    """A world run whose trained world model captures its bottleneck (what the internal lens needs)."""
    from precompute.config import parse_config

    return parse_config({
        "run": {"name": "steer", "n_items": n_items},
        "source": {"kind": "world", "seed": WORLD_SEED, "size": 32},
        "generators": [{"name": "world-model", "kind": "world-model", "steps": 4, "device": "cpu",
                        "capture": [POINT], "batch_size": 8}],
        "encode": {"energy_model": "world", "device": "cpu"},
    })


def add_internal_lens(atlas: Path, internal_sae: Path, output_sae: Path, generator: str = "world-model") -> Path:
    """Publish the two SAEs and ``atlas_info.internal`` in a built atlas, in the layout the build stage uses."""
    import json
    import shutil

    import duckdb

    from precompute.atlas.writer import record_row_counts
    from precompute.sae import load_sae

    relative = f"models/internal-sae/{generator}"
    shutil.copytree(internal_sae, atlas / relative, dirs_exist_ok=True)
    shutil.copytree(output_sae, atlas / "models" / "output-sae", dirs_exist_ok=True)
    sae = load_sae(internal_sae)
    entry = {generator: {"point": POINT, "step": -1, "sae": relative, "channels": sae.input_dim,
                         "grid": [4, 4], "scored_features": sae.config.group_sizes[0]}}
    scale = activation_scale(internal_sae)
    with duckdb.connect(str(atlas / "atlas.duckdb")) as db:
        db.execute("DELETE FROM atlas_info WHERE key = 'internal'")
        db.execute("INSERT INTO atlas_info VALUES ('internal', ?)", [json.dumps(entry)])
        db.execute("DELETE FROM internal_feature_scales WHERE source_id = ?", [generator])
        db.executemany("INSERT INTO internal_feature_scales VALUES (?, ?, ?, ?)",
                       [(generator, f, n, t if n else None)
                        for f, (n, t) in enumerate(zip(scale.fired.tolist(), scale.typical.tolist()))])
        record_row_counts(db)  # as the writer does: the server refuses an atlas whose tables changed after its build
    return atlas


def internal_config(n_items: int = 40):
    """A world run through every stage, the internal lens included, small enough for a test (about a minute)."""
    from precompute.config import parse_config

    return parse_config({
        "run": {"name": "internal", "n_items": n_items},
        "source": {"kind": "world", "seed": WORLD_SEED, "size": 32},
        "generators": [{"name": "world-model", "kind": "world-model", "steps": 4, "device": "cpu",
                        "capture": [POINT], "batch_size": 20}],
        "encode": {"energy_model": "world", "device": "cpu", "n_concepts": 32, "k": 4, "train_epochs": 1,
                   "train_batch_size": 256, "batch_size": 20, "exemplars": 3},
        "analysis": {"bootstrap": 20},
        "internal": [{"generator": "world-model", "expansion": 4, "k": 8, "batch_size": 128, "epochs": 2,
                      "exemplars": 3, "probe": {"min_positives": 3, "steps": 20}}],
    })
