"""The world encoder: storage, the shipped weights, and that its tokens encode world concepts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from precompute.encoders import SHIPPED_WEIGHTS, WorldEncoder, WorldEncoderConfig, WorldEnergyModel, load_energy_model
from precompute.encoders.probe import auroc, fit_linear_probe
from precompute.encoders.train_world_encoder import render_training_set, train_world_encoder
from precompute.errors import ConfigError
from precompute.world import CONCEPTS, World, concept_matrix

TINY = dict(dim=16, depth=1, heads=2, mlp_ratio=2, stem_channels=(4, 8, 8))


@pytest.fixture(scope="module")
def world_model():
    return load_energy_model("world")


@pytest.fixture(scope="module")
def fresh_world():
    """400 items of the demo's world (seed 0), which the encoder never trained on."""
    samples = World(seed=0, size=64).sample_many(0, 400)
    images = np.stack([s.image for s in samples])
    return images, torch.from_numpy(concept_matrix([s.scene for s in samples]))


def test_shipped_weights_are_small_and_load_as_world(world_model):
    assert (SHIPPED_WEIGHTS / "model.safetensors").stat().st_size < 5_000_000
    assert isinstance(world_model, WorldEnergyModel) and world_model.name == "world"
    images = World(seed=0).sample_many(0, 3)
    tokens = world_model.encode([s.image for s in images])
    assert tokens.tokens.shape == (3, 65, world_model.dim) and world_model.n_tokens == 65
    assert tokens.grid == (8, 8) and not tokens.patch_mask[0] and tokens.patch_mask[1:].all()
    assert world_model.config.concepts == [c.name for c in CONCEPTS]


def test_patch_tokens_linearly_encode_salient_concepts(world_model, fresh_world):
    images, labels = fresh_world
    names = [c.name for c in CONCEPTS]
    salient = [names.index(n) for n in ("wood", "grass", "star", "red", "blue", "striped", "sun", "frame")]
    head = auroc(world_model.concept_probabilities(images[200:]), labels[200:])
    assert (head[salient] > 0.9).all(), dict(zip(np.array(names)[salient], head[salient].tolist(), strict=True))
    # a fresh linear probe on mean-pooled patch tokens, fitted on 200 items, scored on the other 200
    pooled = world_model.encode(images).patches().float().mean(dim=(1, 2))
    probe = fit_linear_probe(pooled[:200], labels[:200], l2=1e-2)
    probed = auroc(probe(pooled[200:]), labels[200:])
    assert (probed[salient[:4]] > 0.9).all(), dict(zip(np.array(names)[salient], probed[salient].tolist(), strict=True))


def test_world_embeddings_are_unit_vectors_and_resize_other_sizes(world_model):
    big = [s.image for s in World(seed=0, size=96).sample_many(0, 2)]
    embeddings = world_model.world_embeddings(big)
    assert embeddings.shape == (2, world_model.dim) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(world_model.embed(big), embeddings)


def test_bf16_world_model(fresh_world):
    images, _ = fresh_world
    full = load_energy_model("world").encode(images[:4]).tokens
    half = load_energy_model("world", dtype="bf16").encode(images[:4]).tokens
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().mean() < 0.05


def test_save_and_load_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = WorldEncoder(WorldEncoderConfig(**TINY)).eval()
    model.save_pretrained(tmp_path / "enc")
    loaded = WorldEncoder.from_pretrained(tmp_path / "enc")
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), model(pixels))
    assert load_energy_model(tmp_path / "enc").n_tokens == 65
    weights = tmp_path / "enc" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as an interrupted copy leaves it
    with pytest.raises(ConfigError, match=r"cannot read the world encoder weights .*model\.safetensors"):
        WorldEncoder.from_pretrained(tmp_path / "enc")
    weights.unlink()
    with pytest.raises(ConfigError, match="no model.safetensors"):
        WorldEncoder.from_pretrained(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    (tmp_path / "enc" / "config.json").write_text(json.dumps({**config, "depth_typo": 3}))
    with pytest.raises(ConfigError, match="unknown keys"):
        WorldEncoder.from_pretrained(tmp_path / "enc")
    with pytest.raises(ConfigError, match="divisible"):
        WorldEncoderConfig(dim=30, heads=4)
    with pytest.raises(ConfigError, match="patches of"):
        WorldEncoderConfig(stem_channels=(8, 16))


def test_training_targets_localise_objects_and_extras():
    data = render_training_set(seed=1000, n=40)
    assert data.images.shape == (40, 64, 64, 3) and data.cover.shape == (40, 4, 8, 8)
    names = [c.name for c in CONCEPTS]
    for slot, extra in enumerate(("shadow", "frame", "sun"), start=1):
        has = data.presence[:, names.index(extra)]
        covered = data.cover[:, slot].sum(axis=(1, 2)) > 0
        np.testing.assert_array_equal(covered, has)
    frame = data.presence[:, names.index("frame")]
    interior = data.cover[frame, 2, 2:6, 2:6]
    assert frame.any() and interior.max() == 0 and data.cover[frame, 2, 0].min() > 0
    assert (data.cover[:, 0].sum(axis=(1, 2)) > 0).all()  # every scene has an object


def test_a_short_training_run_saves_a_loadable_encoder(tmp_path):
    progress = []
    report = train_world_encoder(
        tmp_path / "enc",
        steps=3,
        batch_size=8,
        seed=1000,
        progress=progress.append,
        n_images=16,
        n_eval=10,
        config=WorldEncoderConfig(**TINY),
        threads=None,
    )
    assert report["final_train"]["step"] == 3 and np.isfinite(report["final_train"]["loss"])
    assert set(report["held_out"]) >= {"probe_pooled_patches", "head_pooled", "patch_accuracy"}
    assert progress[-1]["phase"] == "train"
    assert load_energy_model(tmp_path / "enc").dim == 16
    with pytest.raises(ConfigError, match="steps"):
        train_world_encoder(tmp_path / "bad", steps=0, batch_size=8, seed=1000)


def test_patch_tokens_carry_local_concepts(world_model):
    """Object patches read out the object's classes, background patches the background, extras where they lie."""
    data = render_training_set(seed=7, n=120)
    tokens = world_model.encode(data.images).tokens
    logits = world_model.model.patch_logits(tokens)
    cover = torch.from_numpy(data.cover).flatten(2)  # (n, 4, 64)
    on_object, on_background = cover[:, 0] >= 0.5, cover[:, 0] < 0.5
    classes = torch.from_numpy(data.classes)
    families = list(world_model.config.patch_families)
    for family, where, floor in (
        ("colour", on_object, 0.95),
        ("shape", on_object, 0.85),
        ("background", on_background, 0.95),
    ):
        hits = logits[family].argmax(dim=-1) == classes[:, families.index(family), None]
        assert hits[where].float().mean() > floor, family
    extras = world_model.config.patch_extras
    for slot, extra in enumerate(extras, start=1):
        covered = (cover[:, slot] > 0).reshape(-1, 1)
        located = auroc(logits["extras"][..., extras.index(extra)].reshape(-1, 1), covered)
        assert located.item() > 0.9, extra


def test_an_sae_of_another_encoder_is_refused_before_anything_is_encoded(tmp_path):
    from precompute.config import parse_config
    from precompute.pipeline import run_pipeline
    from precompute.sae import build_sae
    from tests.conftest import silent_progress

    build_sae("topk", input_dim=768, n_concepts=16, k=2).save_pretrained(tmp_path / "dinov2-sae")
    config = parse_config({"run": {"n_items": 4}, "source": {"kind": "world", "size": 32},
                           "generators": [{"name": "planted", "kind": "planted"}],
                           "encode": {"energy_model": "world", "sae": str(tmp_path / "dinov2-sae")}})
    with pytest.raises(ConfigError, match=r"dinov2-sae takes tokens of dimension 768.*128"):
        run_pipeline(config, tmp_path / "atlas", work=tmp_path / "work", progress=silent_progress)
    assert not (tmp_path / "work" / "encode").exists() or not any((tmp_path / "work" / "encode").rglob("*.parquet"))
