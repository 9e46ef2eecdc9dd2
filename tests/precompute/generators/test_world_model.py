"""The world generator: tokenizer over the caption vocabulary, pipeline contract, save/load, shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from precompute.errors import ConfigError
from precompute.generators.world_model import (
    IMAGE_SIZE,
    WorldModelConfig,
    WorldPipeline,
    build_world_pipeline,
    images_to_sample,
    sample_to_images,
)
from precompute.generators.world_tokenizer import (
    MAX_LENGTH,
    build_world_tokenizer,
    caption_words,
    clip_words,
    learn_merges,
)
from precompute.world import World

SHIPPED = Path(__file__).resolve().parents[3] / "precompute" / "world" / "weights" / "world-model"
PROMPTS = ["a red circle on a white background", "two blue squares on grass", "a yellow star on a wooden table"]
STEPS = 3


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_world_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    """A tiny random-weight pipeline saved through ``save_pretrained``."""
    root = tmp_path_factory.mktemp("world-model")
    pipe = build_world_pipeline(root / "tokenizer", WorldModelConfig.tiny(), seed=0)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(scope="module")
def pipe(saved_pipeline) -> WorldPipeline:
    loaded = WorldPipeline.from_pretrained(saved_pipeline)
    loaded.set_progress_bar_config(disable=True)
    return loaded


# --- tokenizer ---------------------------------------------------------------------------------


def test_every_caption_word_is_one_token(tokenizer):
    world = World(seed=7, size=8)
    for i in range(500):
        caption = world.sample(i).caption
        ids = tokenizer(caption).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) - 2 == len(clip_words(caption)), tokenizer.tokenize(caption)
        assert len(ids) <= MAX_LENGTH
        # round trip: the decoded words tokenise back to the same ids
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == caption.lower().replace(" ", "")
        assert tokenizer(decoded).input_ids == ids


def test_unknown_words_fall_back_to_characters(tokenizer):
    pieces = tokenizer.tokenize("a zebra")
    assert pieces[0] == "a</w>" and len(pieces) > 2
    assert tokenizer.unk_token_id not in tokenizer("a zebra").input_ids[1:-1]


def test_every_vocabulary_word_is_one_token(tokenizer):
    words = caption_words()
    assert {"star", "hexagon", "checkerboard", "polka", "lemon", ",", "4"} <= set(words)
    assert all(len(tokenizer.tokenize(w)) == 1 for w in words)
    assert len(set(learn_merges(words))) == len(learn_merges(words))


def test_prompts_pad_to_max_length(pipe):
    ids = pipe.tokenize(["", PROMPTS[0]])
    assert ids.shape == (2, MAX_LENGTH)


# --- pipeline ----------------------------------------------------------------------------------


def test_unshuffle_is_lossless():
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    sample = images_to_sample(images)
    assert sample.shape == (2, 12, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    assert torch.equal(sample_to_images(sample), images)


@pytest.mark.parametrize(("output_type", "expected"), [("np", np.ndarray), ("pt", torch.Tensor), ("pil", list)])
def test_output_shape_and_type(pipe, output_type, expected):
    images = pipe(PROMPTS[:2], num_inference_steps=STEPS, generator=_generators(0, 1), output_type=output_type).images
    assert isinstance(images, expected)
    if output_type == "np":
        assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3) and 0 <= images.min() and images.max() <= 1
    elif output_type == "pt":
        assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    else:
        assert [im.size for im in images] == [(IMAGE_SIZE, IMAGE_SIZE)] * 2


def test_image_depends_on_its_generator_not_on_the_batch(pipe):
    alone = pipe(PROMPTS[1], num_inference_steps=STEPS, generator=_generators(5), output_type="np").images[0]
    batch = pipe(PROMPTS, num_inference_steps=STEPS, generator=_generators(9, 5, 11), output_type="np").images
    np.testing.assert_allclose(batch[1], alone, atol=1e-5)
    assert not np.allclose(batch[0], batch[1])


def test_guidance_scale_one_runs_without_the_unconditional_half(pipe):
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    try:
        pipe(PROMPTS[:2], num_inference_steps=STEPS, guidance_scale=1.0, generator=_generators(0, 1), output_type="np")
        assert seen == [2] * STEPS
        seen.clear()
        pipe(PROMPTS[:2], num_inference_steps=STEPS, guidance_scale=3.0, generator=_generators(0, 1), output_type="np")
        assert seen == [4] * STEPS  # [uncond, cond]
    finally:
        handle.remove()


def test_save_load_round_trip_gives_identical_images(saved_pipeline, pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "again")
    again = WorldPipeline.from_pretrained(tmp_path / "again")
    again.set_progress_bar_config(disable=True)
    for component in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (saved_pipeline / component).is_dir()
    first = pipe(PROMPTS[0], num_inference_steps=STEPS, generator=_generators(3), output_type="np").images
    second = again(PROMPTS[0], num_inference_steps=STEPS, generator=_generators(3), output_type="np").images
    np.testing.assert_array_equal(first, second)
    assert again.unet.mid_block is not None


def test_bad_arguments_raise_config_errors(pipe):
    with pytest.raises(ConfigError, match="one per prompt"):
        pipe(PROMPTS[:2], num_inference_steps=STEPS, generator=_generators(0))
    with pytest.raises(ConfigError, match="output_type"):
        pipe(PROMPTS[0], num_inference_steps=STEPS, output_type="jpeg")
    with pytest.raises(ConfigError, match="prompt"):
        pipe([], num_inference_steps=STEPS)
    with pytest.raises(ConfigError):
        WorldModelConfig(block_out_channels=(30, 60))


# --- shipped weights ---------------------------------------------------------------------------


@pytest.mark.skipif(not (SHIPPED / "model_index.json").exists(), reason="world-model weights not shipped")
def test_shipped_weights_generate_images():
    shipped = WorldPipeline.from_pretrained(SHIPPED)
    shipped.set_progress_bar_config(disable=True)
    images = shipped(PROMPTS[:2], num_inference_steps=4, generator=_generators(0, 1), output_type="np").images
    assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.isfinite(images).all() and images.std() > 0.01
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert total <= 20 * 2**20


# --- training ----------------------------------------------------------------------------------


def test_training_checkpoints_resumes_and_exports(tmp_path):
    import json

    from precompute.generators.train_world_model import TrainConfig, train_world_model

    kwargs = {"batch_size": 4, "checkpoint_every": 1, "work_dir": tmp_path / "work",
              "model_config": WorldModelConfig.tiny(), "n_images": 16}
    out = train_world_model(tmp_path / "model", steps=1, **kwargs)
    train_world_model(out, steps=2, **kwargs)
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert state["step"] == 2
    assert not list((tmp_path / "work").glob("*.pt")) and not list(out.rglob("*.bin"))
    loaded = WorldPipeline.from_pretrained(out)
    loaded.set_progress_bar_config(disable=True)
    assert loaded(PROMPTS[0], num_inference_steps=2, generator=_generators(0), output_type="np").images.shape[0] == 1
    schedule = TrainConfig(steps=1000, warmup=100)
    assert schedule.learning_rate(0) < schedule.learning_rate(99) == pytest.approx(schedule.lr)
    assert schedule.learning_rate(999) < 0.1 * schedule.lr
    with pytest.raises(ConfigError):
        TrainConfig(steps=0)


def test_a_64_pixel_model_warm_started_from_a_32_pixel_one_predicts_its_upsampled_denoising(tmp_path):
    """warm_start maps the first and last convolution across unshuffle factors: on a nearest-upsampled input the
    new model's prediction is the old one's, upsampled."""
    import dataclasses

    import torch.nn.functional as F

    from precompute.generators.train_world_model import warm_start
    from precompute.generators.world_model import WorldModelConfig, build_world_pipeline

    small = WorldModelConfig.tiny()
    old = build_world_pipeline(tmp_path / "a", small, seed=1)
    new = build_world_pipeline(tmp_path / "b", dataclasses.replace(small, image_size=64, unshuffle=4), seed=2)
    assert (old.image_size, new.image_size, new.unshuffle) == (32, 64, 4)
    warm_start(new, old)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    hidden = old.encode_prompt(["a red circle", "two blue squares"])
    t = torch.tensor([700, 100])
    with torch.no_grad():
        before = sample_to_images(old.unet(images_to_sample(image, 2), t, encoder_hidden_states=hidden).sample, 2)
        after = sample_to_images(new.unet(images_to_sample(F.interpolate(image, scale_factor=2), 4), t,
                                          encoder_hidden_states=hidden).sample, 4)
    torch.testing.assert_close(after, F.interpolate(before, scale_factor=2), atol=1e-5, rtol=1e-4)
    images = new(["a red circle"], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
