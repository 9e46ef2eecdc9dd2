"""Generators by kind: diffusers pipelines loaded by path, seeds, UNet swap, OOM fallback, flags, preflight."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from precompute.config import DiffusersGeneratorConfig, WorldModelGeneratorConfig
from precompute.errors import ConfigError
from precompute.generators.diffusers_generator import PipelineGenerator, Skipped
from precompute.generators.registry import (
    make_diffusers_generator,
    make_world_model_generator,
    preflight_diffusers,
    preflight_world_model,
)
from precompute.generators.seeding import SEED_BITS, item_seed

pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = ["a red circle on grass", "two blue squares", "a yellow star on a wooden table"]
IDS = ["item-0", "item-1", "item-2"]


def sd_config(model, **extra) -> DiffusersGeneratorConfig:
    settings = {"name": "tiny", "kind": "diffusers", "model": str(model), "steps": 2, "width": 64, "height": 64,
                "batch_size": 3, **extra}
    return DiffusersGeneratorConfig(**settings)


def pixels(results) -> list[np.ndarray]:
    return [np.asarray(image) for image, _, _ in results]


def pixels_images(results):
    return [image for image, _, _ in results]


@pytest.fixture(scope="module")
def tiny_generator(tiny_sd) -> PipelineGenerator:
    return make_diffusers_generator(sd_config(tiny_sd), "cpu")


def test_seeds_are_stable_63_bit_and_differ_by_generator_and_item():
    seed = item_seed("sd15", 0, "item-0")
    assert seed == item_seed("sd15", 0, "item-0") and 0 <= seed < 2**SEED_BITS
    assert len({seed, item_seed("sd15", 1, "item-0"), item_seed("dpo", 0, "item-0"), item_seed("sd15", 0, "x")}) == 4


def test_a_saved_pipeline_loads_by_path_with_fp32_on_cpu_and_no_safety_checker(tiny_generator):
    results = tiny_generator(CAPTIONS, IDS)
    assert [image.size for image in pixels_images(results)] == [(64, 64)] * 3
    assert all(image.mode == "RGB" and concepts == () and flag is None for image, concepts, flag in results)
    setup = tiny_generator.setup
    assert setup["dtype"] == "fp32" and setup["safety_checker"] is False and setup["attention"] == "sdpa"
    assert setup["pipeline_class"] == "StableDiffusionPipeline"
    assert "running fp32 on the CPU" in " ".join(setup["notes"])


def test_an_item_gives_the_same_image_whatever_its_batch(tiny_generator):
    together = pixels(tiny_generator(CAPTIONS, IDS))
    tiny_generator.batch_size = 1
    try:
        alone = pixels(tiny_generator(CAPTIONS[::-1], IDS[::-1]))[::-1]  # other order, one at a time
    finally:
        tiny_generator.batch_size = 3
    # Same seed, same noise: the images agree up to float rounding of batched kernels (oneDNN/cuBLAS pick
    # kernels by shape, so bit-identity across batch sizes is not promised; across processes and resumes,
    # where batches are the same, it is, see test_distributed).
    for a, b in zip(together, alone):
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3
    assert np.abs(together[0].astype(int) - together[1]).mean() > 5  # different items, different seeds


def test_unet_swap_changes_the_images(tiny_sd, tiny_sd_other, tiny_generator):
    swapped = make_diffusers_generator(sd_config(tiny_sd, unet=str(tiny_sd_other)), "cpu")
    base = pixels(tiny_generator(CAPTIONS[:1], IDS[:1]))[0]
    other = pixels(swapped(CAPTIONS[:1], IDS[:1]))[0]
    assert not np.array_equal(base, other)
    bare = make_diffusers_generator(sd_config(tiny_sd, unet=str(tiny_sd_other / "unet")), "cpu")  # a bare UNet folder
    assert np.array_equal(pixels(bare(CAPTIONS[:1], IDS[:1]))[0], other)


def test_unknown_models_fail_in_preflight_with_the_reason(tmp_path, tiny_sd):
    with pytest.raises(ConfigError, match="no such folder"):
        preflight_diffusers(sd_config(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no model_index.json"):
        preflight_diffusers(sd_config(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="unet"):
        preflight_diffusers(sd_config(tiny_sd, unet=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="a StableDiffusionPipeline takes no separate prior"):
        preflight_diffusers(sd_config(tiny_sd, prior=str(tiny_sd)))
    with pytest.raises(ConfigError, match="xformers"):
        preflight_diffusers(sd_config(tiny_sd, attention="xformers"))
    with pytest.raises(ConfigError, match="shipped world-model weights|has no model_index.json"):
        preflight_world_model(WorldModelGeneratorConfig(name="w", kind="world-model", path=tmp_path / "empty"))


def test_a_hub_id_that_cannot_be_had_fails_with_the_reason(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="some-org/no-such-model"):
        preflight_diffusers(sd_config("some-org/no-such-model"))


class FakePipeline:
    """Stands in for a pipeline on a small GPU: out of memory above ``max_batch`` prompts."""

    def __init__(self, max_batch: int, black: set[str] = frozenset()):
        self.max_batch, self.black, self.calls = max_batch, black, []

    def __call__(self, prompt, generator, **kwargs):
        self.calls.append(len(prompt))
        if len(prompt) > self.max_batch:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        shade = [0 if p in self.black else 1 + int(g.initial_seed() % 200) for p, g in zip(prompt, generator)]
        return SimpleNamespace(images=[Image.new("RGB", (8, 8), (s, s, s)) for s in shade])


def test_out_of_memory_halves_the_batch_down_to_one_then_skips():
    fake = FakePipeline(max_batch=1)
    generator = PipelineGenerator(fake, "fake", 0, {}, batch_size=4)
    results = generator([f"c{i}" for i in range(5)], [f"i{i}" for i in range(5)])
    assert all(not isinstance(r, Skipped) for r in results) and len(results) == 5
    assert fake.calls[:3] == [4, 2, 1] and generator.oom_events == 2
    never = PipelineGenerator(FakePipeline(max_batch=0), "fake", 0, {}, batch_size=2)
    skipped = never(["a", "b"], ["i0", "i1"])
    assert [type(r) for r in skipped] == [Skipped, Skipped]
    assert skipped[0].reason == "out-of-memory" and "out of memory" in skipped[0].detail


def test_other_errors_are_not_swallowed():
    def broken(**kwargs):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        PipelineGenerator(broken, "fake", 0, {}, batch_size=2)(["a"], ["i0"])


def test_a_black_image_is_flagged():
    generator = PipelineGenerator(FakePipeline(max_batch=8, black={"nsfw"}), "fake", 0, {}, batch_size=2)
    flags = [flag for _, _, flag in generator(["fine", "nsfw"], ["i0", "i1"])]
    assert flags == [None, "black"]


def test_world_model_output_is_resized_to_the_world_size(tmp_path):
    from precompute.generators.world_model import WorldModelConfig, build_world_pipeline

    build_world_pipeline(tmp_path / "tok", WorldModelConfig.tiny()).save_pretrained(tmp_path / "world-model")
    config = WorldModelGeneratorConfig(name="w", kind="world-model", path=tmp_path / "world-model", steps=2)
    generator = make_world_model_generator(config, "cpu", size=48)
    results = generator(CAPTIONS[:2], IDS[:2])
    assert [image.size for image, _, _ in results] == [(48, 48)] * 2
    assert generator.setup["pipeline_class"] == "WorldPipeline"
