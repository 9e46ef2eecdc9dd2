"""Steering hook: identity at strength 0, real changes when strong, exact D(z') - D(z), options, always unhooked."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from precompute.errors import ConfigError
from precompute.generators.steering import FeatureEdit, SteeringConfig, apply_steering
from precompute.sae import build_sae, load_sae
from tests.steering_support import POINT, capture_bottleneck, load_world_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a red star on grass"
STEPS = 4


@pytest.fixture(scope="module")
def pipeline():
    return load_world_pipeline()


@pytest.fixture(scope="module")
def sae(world_internal_sae):
    return load_sae(world_internal_sae)


def generate(pipeline, seed: int = 3) -> np.ndarray:
    image = pipeline(PROMPT, num_inference_steps=STEPS, guidance_scale=3.0,
                     generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image)


def steer(edits, **kw) -> SteeringConfig:
    return SteeringConfig(point=POINT, edits=tuple(FeatureEdit(f, s) for f, s in edits), **kw)


def active_feature(pipeline, sae) -> int:
    """The feature with the largest total code on the prompt's bottleneck activations."""
    codes = sae.encode_codes(capture_bottleneck(pipeline, [PROMPT], steps=STEPS))
    return int(codes.sum(0).argmax())


def test_strength_zero_gives_the_byte_identical_image(pipeline, sae):
    plain = generate(pipeline)
    feature = active_feature(pipeline, sae)
    with apply_steering(pipeline, sae, steer([(feature, 0.0), (feature + 1, 0.0)])) as hook:
        steered = generate(pipeline)
    assert hook.steered_steps == list(range(STEPS))  # the hook ran at every step and changed nothing
    assert steered.tobytes() == plain.tobytes()


@pytest.mark.parametrize("mode, strength", [("scale", 8.0), ("add", 40.0)])
def test_a_strong_steer_changes_the_image(pipeline, sae, mode, strength):
    plain = generate(pipeline)
    with apply_steering(pipeline, sae, steer([(active_feature(pipeline, sae), strength)], mode=mode)):
        steered = generate(pipeline)
    changed = np.abs(steered.astype(int) - plain.astype(int))
    assert changed.mean() > 2.0  # many pixel levels on average, not rounding noise


def test_hooks_are_removed_even_after_an_error(pipeline, sae):
    plain = generate(pipeline)
    hooks = (len(pipeline.unet._forward_pre_hooks), len(pipeline.unet.mid_block._forward_hooks))
    with pytest.raises(RuntimeError, match="interrupted"):
        with apply_steering(pipeline, sae, steer([(0, 20.0)], mode="add")):
            raise RuntimeError("interrupted")
    assert (len(pipeline.unet._forward_pre_hooks), len(pipeline.unet.mid_block._forward_hooks)) == hooks
    assert generate(pipeline).tobytes() == plain.tobytes()


# -- the hook on a stand-in denoiser: exact arithmetic, steps and halves -----------------------


class Denoiser(nn.Module):
    """``mid_block`` is the identity on (B, C, H, W); ``blocks.0`` returns a (text, image) tuple of (B, T, C)."""

    def __init__(self):
        super().__init__()
        self.mid_block = nn.Identity()
        self.blocks = nn.ModuleList([TupleBlock()])

    def forward(self, x):
        return self.mid_block(x)


class TupleBlock(nn.Module):
    def forward(self, tokens):
        return tokens[:, :1], tokens


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    sae = build_sae("topk", input_dim=4, n_concepts=16, k=3).eval()
    with torch.no_grad():
        sae.b_dec.normal_()
    return SimpleNamespace(unet=Denoiser()), sae


def test_scale_mode_is_exactly_d_of_z_prime_minus_d_of_z(tiny):
    pipe, sae = tiny
    h = torch.randn(2, 4, 3, 5)  # [uncond, cond], 4 channels at 3x5 positions
    positions = h[1:].permute(0, 2, 3, 1).reshape(-1, 4)
    codes = sae.encode_codes(positions)
    features = codes.sum(0).topk(2).indices.tolist()
    edits = [(features[0], 2.0), (features[1], -1.0)]
    scaled = codes.clone()
    for feature, strength in edits:
        scaled[:, feature] *= 1 + strength
    expected = positions + sae.decode(scaled) - sae.decode(codes)
    with apply_steering(pipe, sae, steer(edits)):
        out = pipe.unet(h)
    assert torch.equal(out[:1], h[:1])  # the unconditional half is untouched
    torch.testing.assert_close(out[1:].permute(0, 2, 3, 1).reshape(-1, 4), expected, rtol=1e-5, atol=1e-5)


def test_add_mode_adds_the_unit_decoder_direction_everywhere(tiny):
    pipe, sae = tiny
    h = torch.randn(1, 4, 2, 2)
    direction = sae.dictionary[5] / sae.dictionary[5].norm()
    with apply_steering(pipe, sae, steer([(5, 3.0)], mode="add", guided=False)):
        out = pipe.unet(h)
    torch.testing.assert_close(out - h, (3.0 * direction)[None, :, None, None].expand_as(h))


def test_only_the_step_range_is_steered(tiny):
    pipe, sae = tiny
    h = torch.randn(2, 4, 2, 2)
    with apply_steering(pipe, sae, steer([(1, 5.0)], mode="add", steps=(1, 3))) as hook:
        outputs = [pipe.unet(h) for _ in range(4)]
    assert hook.steered_steps == [1, 2]
    assert [not torch.equal(o, h) for o in outputs] == [False, True, True, False]


def test_conditional_half_option(tiny):
    pipe, sae = tiny
    h = torch.randn(4, 4, 2, 2)  # [uncond x2, cond x2]
    with apply_steering(pipe, sae, steer([(1, 5.0)], mode="add")):
        cond_only = pipe.unet(h)
    with apply_steering(pipe, sae, steer([(1, 5.0)], mode="add", conditional_only=False)):
        both = pipe.unet(h)
    assert torch.equal(cond_only[:2], h[:2]) and not torch.equal(cond_only[2:], h[2:])
    assert not torch.equal(both[:2], h[:2])
    torch.testing.assert_close(both[2:], cond_only[2:])
    with apply_steering(pipe, sae, steer([(1, 5.0)], mode="add", guided=True)):
        with pytest.raises(RuntimeError, match="odd size"):
            pipe.unet(h[:3])


def test_token_streams_steer_the_image_stream_of_a_tuple(tiny):
    pipe, sae = tiny
    tokens = torch.randn(1, 6, 4)
    config = SteeringConfig(point="unet.blocks.0", edits=(FeatureEdit(2, 1.5),), mode="add", guided=False)
    with apply_steering(pipe, sae, config):
        text, image = pipe.unet.blocks[0](tokens)
    direction = sae.dictionary[2] / sae.dictionary[2].norm()
    torch.testing.assert_close(image - tokens, (1.5 * direction).expand_as(tokens))
    assert torch.equal(text, tokens[:, :1])


@pytest.mark.parametrize("config, message", [
    (dict(edits=()), "at least one"),
    (dict(edits=(FeatureEdit(1, 1.0), FeatureEdit(1, 2.0))), "once"),
    (dict(mode="multiply"), "mode"),
    (dict(steps=(3, 3)), "start < stop"),
    (dict(steps=(-1, 2)), "start < stop"),
    (dict(point="unet."), "dotted"),
])
def test_bad_configs_say_what_was_expected(config, message):
    with pytest.raises(ConfigError, match=message):
        SteeringConfig(**{"point": POINT, "edits": (FeatureEdit(1, 1.0),), **config})


@pytest.mark.parametrize("feature, strength", [(-1, 1.0), (1.5, 1.0), (1, float("nan")), (1, "big")])
def test_bad_edits_are_refused(feature, strength):
    with pytest.raises(ConfigError):
        FeatureEdit(feature, strength)


def test_unknown_features_and_wrong_widths_are_refused(tiny):
    pipe, sae = tiny
    with pytest.raises(ConfigError, match=r"features 0\.\.15"):
        with apply_steering(pipe, sae, steer([(16, 1.0)])):
            pass
    with apply_steering(pipe, sae, steer([(1, 1.0)])):
        with pytest.raises(ConfigError, match="3 channels"):
            pipe.unet(torch.randn(2, 3, 2, 2))
    with pytest.raises(ConfigError, match="no module"):
        with apply_steering(pipe, sae, SteeringConfig(point="transformer.x", edits=(FeatureEdit(1, 1.0),))):
            pass
