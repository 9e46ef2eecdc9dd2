"""The generate stage with a diffusers generator on the embedded world: atlas images, capture, preflight, resume."""

from __future__ import annotations

import json
from contextlib import contextmanager

import duckdb
import pytest
import torch
from safetensors.torch import load_file

from precompute.atlas.writer import ATLAS_DB
from precompute.config import parse_config
from precompute.errors import ConfigError
from precompute.pipeline import run_pipeline
from precompute.stages.common import StageContext
from precompute.stages.generate import IMAGES, generator_store, read_capture
from tests.conftest import BASIC_STAGES, silent_progress

pytestmark = pytest.mark.usefixtures("one_thread")


def sd_world_config(model, n_items: int = 6, **generator):
    return parse_config({
        "run": {"name": "gen", "n_items": n_items},
        "source": {"kind": "world", "seed": 3, "size": 32},
        "generators": [{"name": "sd", "kind": "diffusers", "model": str(model), "steps": 2, "width": 64,
                        "height": 64, "batch_size": 4, **generator}],
    })


def test_a_diffusers_generator_fills_the_atlas(tiny_sd, tmp_path):
    config = sd_world_config(tiny_sd, n_items=4)
    out = tmp_path / "atlas"
    report = run_pipeline(config, out, progress=silent_progress, stages=BASIC_STAGES, shard_size=3)
    with duckdb.connect(str(out / ATLAS_DB), read_only=True) as db:
        assert db.execute("SELECT source_id, kind, n_images FROM sources ORDER BY 1").fetchall() == [
            ("real", "real", 4), ("sd", "diffusers", 4)]
        sizes = db.execute("SELECT DISTINCT width, height FROM images WHERE source_id = 'sd'").fetchall()
    assert sizes == [(64, 64)]
    generate = next(m for m in report.manifests if m["stage"] == "generate")
    assert generate["config"]["loaded"]["dtype"] == "fp32" and generate["config"]["loaded"]["safety_checker"] is False
    assert generate["counts"]["images"] == 4 and generate["counts"]["shards"] == 2
    store = generator_store(StageContext(config, tmp_path / "atlas.work", silent_progress, 3), config.generators[0])
    for meta in store.metas():
        assert meta["n_items"] + meta["skipped"] in (3, 1) and meta["seconds"] > 0 and meta["images_per_s"] > 0


def test_capture_writes_position_and_pooled_activations_per_shard(tiny_sd, tmp_path):
    config = sd_world_config(tiny_sd, n_items=5, capture=["unet.mid_block"], capture_budget=10, guidance=7.5)
    run_pipeline(config, tmp_path / "atlas", work=tmp_path / "work", progress=silent_progress,
                 stages=["sample", "generate"], shard_size=3)
    store = generator_store(StageContext(config, tmp_path / "work", silent_progress, 3), config.generators[0])
    for meta, images in zip(store.metas(), (3, 2)):
        entry = meta["capture"]["unet.mid_block@1"]  # 2 steps: the last is step 1
        tensors = load_file(store.folder / entry["file"])
        # tiny UNet mid block: 16 channels at 8x8 = 64 positions per image, 10 kept by the budget
        assert tensors["positions"].shape == (images * 10, 16) and tensors["positions"].dtype == torch.float16
        assert tensors["pooled"].shape == (images, 16)
        assert tensors["image_index"].tolist() == [i for i in range(images) for _ in range(10)]
        assert entry["shapes"] == {name: list(t.shape) for name, t in tensors.items()}
    captured = read_capture(store, "unet.mid_block", 1)
    items = store.read("images", IMAGES).column("item_id").to_pylist()
    assert captured["image_items"] == items and captured["pooled"].shape == (5, 16)
    assert captured["position_items"] == [item for item in items for _ in range(10)]
    with pytest.raises(ConfigError, match="no capture"):
        read_capture(store, "unet.mid_block", 0)


def test_captures_of_a_generator_that_draws_only_its_first_items(tiny_sd, tmp_path):
    """A generator with n_items draws nothing in the shards past them; its captures read as the items it drew."""
    base = sd_world_config(tiny_sd, n_items=7, capture=["unet.mid_block"], capture_budget=4)
    document = base.model_dump(mode="json", exclude_none=True)
    document["generators"][0]["n_items"] = 2
    config = parse_config(document)
    run_pipeline(config, tmp_path / "atlas", work=tmp_path / "work", progress=silent_progress,
                 stages=["sample", "generate"], shard_size=3)
    store = generator_store(StageContext(config, tmp_path / "work", silent_progress, 3), config.generators[0])
    captured = read_capture(store, "unet.mid_block", 1)
    assert captured["pooled"].shape == (2, 16) and captured["positions"].shape == (8, 16)
    assert captured["image_items"] == store.read("images", IMAGES).column("item_id").to_pylist()
    assert len(captured["image_items"]) == 2


def test_an_unusable_model_fails_before_any_image(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    config = parse_config({
        "run": {"n_items": 4}, "source": {"kind": "world", "size": 32},
        "generators": [{"name": "planted", "kind": "planted"},
                       {"name": "bad", "kind": "diffusers", "model": str(tmp_path / "not-a-model")}],
    })
    with pytest.raises(ConfigError, match="no model_index.json"):
        run_pipeline(config, tmp_path / "atlas", work=tmp_path / "work", progress=silent_progress, stages=BASIC_STAGES)
    assert not list((tmp_path / "work").glob("generate/*/images/*.png"))


def test_a_killed_run_resumes_to_the_same_images_and_activations(tiny_sd, tmp_path):
    config = sd_world_config(tiny_sd, n_items=4, capture=["unet.mid_block"], batch_size=2)
    stages = ["sample", "generate"]
    run_pipeline(config, tmp_path / "a", work=tmp_path / "clean", progress=silent_progress, stages=stages,
                 shard_size=2)
    made = {"n": 0}

    @contextmanager
    def dying(total, description, unit):
        def advance(n=1):
            if description.startswith("generate"):
                made["n"] += n
                if made["n"] >= 3:  # dies in the second shard, after the first is finished
                    raise KeyboardInterrupt("killed")
        yield advance

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, tmp_path / "b", work=tmp_path / "resumed", progress=dying, stages=stages, shard_size=2)
    first = json.loads((tmp_path / "resumed/generate/sd/shards/00000.json").read_text())
    run_pipeline(config, tmp_path / "b", work=tmp_path / "resumed", progress=silent_progress, stages=stages,
                 shard_size=2)
    assert json.loads((tmp_path / "resumed/generate/sd/shards/00000.json").read_text()) == first  # not redone
    clean, resumed = tmp_path / "clean/generate/sd", tmp_path / "resumed/generate/sd"
    files = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.suffix in (".png", ".safetensors"))
    assert len(files) == 4 + 2
    assert all((clean / f).read_bytes() == (resumed / f).read_bytes() for f in files)


def test_the_world_model_kind_resizes_to_the_world_and_captures(tmp_path):
    from precompute.generators.world_model import WorldModelConfig, build_world_pipeline

    build_world_pipeline(tmp_path / "tok", WorldModelConfig.tiny()).save_pretrained(tmp_path / "world-model")
    config = parse_config({
        "run": {"n_items": 3}, "source": {"kind": "world", "size": 48},
        "generators": [{"name": "wm", "kind": "world-model", "path": str(tmp_path / "world-model"), "steps": 2,
                        "capture": ["unet.mid_block"], "capture_budget": 5}],
    })
    run_pipeline(config, tmp_path / "atlas", progress=silent_progress, stages=BASIC_STAGES)
    with duckdb.connect(str(tmp_path / "atlas" / ATLAS_DB), read_only=True) as db:
        assert db.execute("SELECT DISTINCT width, height FROM images WHERE source_id = 'wm'").fetchall() == [(48, 48)]
    store = generator_store(StageContext(config, tmp_path / "atlas.work", silent_progress), config.generators[0])
    entry = store.metas()[0]["capture"]["unet.mid_block@1"]
    assert entry["shapes"]["pooled"][0] == 3 and entry["shapes"]["positions"][0] == 3 * 5
