"""Activation capture: hook points by path, steps, the conditional half, budgets, hooks always removed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from precompute.errors import ConfigError
from precompute.generators.capture import (
    CaptureBuffer,
    CaptureConfig,
    apply_capture,
    default_point,
    resolve_module,
    select_positions,
    to_positions,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDenoiser(nn.Module):
    """A stand-in denoiser: ``mid_block`` maps (B, 4, 2, 3) to itself; ``blocks.0`` returns a FLUX-like tuple."""

    def __init__(self):
        super().__init__()
        self.mid_block = nn.Identity()
        self.blocks = nn.ModuleList([TupleBlock()])

    def forward(self, x):
        self.blocks[0](x.flatten(2).transpose(1, 2))
        return self.mid_block(x)


class TupleBlock(nn.Module):
    def forward(self, tokens):
        return tokens[:, :1] * 0, tokens  # (text stream, image stream)


def pipeline():
    return SimpleNamespace(unet=TinyDenoiser())


def config(**kw) -> CaptureConfig:
    settings = {"points": ("unet.mid_block",), "steps": (-1,), "num_inference_steps": 3, "guided": True, **kw}
    return CaptureConfig(**settings)


def run_steps(pipe, batch: torch.Tensor, steps: int = 3) -> None:
    for step in range(steps):
        pipe.unet(batch + step)


def test_last_step_conditional_half_every_position_a_sample():
    pipe = pipeline()
    batch = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 2, 3)  # [uncond, cond]
    with apply_capture(pipe, config()) as recorder:
        run_steps(pipe, batch)
        captured = recorder.take()
    assert list(captured) == [("unet.mid_block", 2)]
    expected = (batch[1:] + 2).flatten(2).transpose(1, 2)  # the second half at step 2, (1, 6 positions, 4 channels)
    assert torch.equal(captured[("unet.mid_block", 2)], expected)


def test_without_guidance_the_whole_batch_is_kept_even_when_even():
    pipe = pipeline()
    with apply_capture(pipe, config(guided=False, steps=(0, -1))) as recorder:
        run_steps(pipe, torch.randn(4, 4, 2, 3))
        captured = recorder.take()
    assert sorted(captured) == [("unet.mid_block", 0), ("unet.mid_block", 2)]
    assert all(t.shape == (4, 6, 4) for t in captured.values())


def test_token_streams_take_the_image_stream_of_a_tuple():
    pipe = pipeline()
    with apply_capture(pipe, config(points=("unet.blocks.0",), guided=False)) as recorder:
        batch = torch.randn(2, 4, 2, 3)
        run_steps(pipe, batch)
        captured = recorder.take()[("unet.blocks.0", 2)]
    assert torch.equal(captured, (batch + 2).flatten(2).transpose(1, 2))


def test_hooks_are_removed_even_when_generation_fails():
    pipe = pipeline()
    with pytest.raises(ValueError, match="boom"):
        with apply_capture(pipe, config()):
            assert pipe.unet.mid_block._forward_hooks and pipe.unet._forward_pre_hooks
            raise ValueError("boom")
    assert not pipe.unet.mid_block._forward_hooks and not pipe.unet._forward_pre_hooks


def test_a_step_that_never_ran_is_an_error_not_silence():
    pipe = pipeline()
    with apply_capture(pipe, config(num_inference_steps=5)) as recorder:
        run_steps(pipe, torch.randn(2, 4, 2, 3), steps=3)
        with pytest.raises(RuntimeError, match=r"step\(s\) \[4\]"):
            recorder.take()


def test_bad_points_and_steps_are_config_errors():
    with pytest.raises(ConfigError, match="no submodule"):
        resolve_module(pipeline(), "unet.no_such_block")
    with pytest.raises(ConfigError, match="no module 'transformer'"):
        resolve_module(pipeline(), "transformer.transformer_blocks.18")
    with pytest.raises(ConfigError, match="capture_steps"):
        config(steps=(3,))
    with pytest.raises(ConfigError, match="dotted module paths"):
        config(points=())
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\)"):
        to_positions(torch.zeros(3), None)
    assert default_point(pipeline()) == "unet.mid_block"
    flux = SimpleNamespace(transformer=SimpleNamespace(transformer_blocks=nn.ModuleList([nn.Identity()] * 19)))
    assert default_point(flux) == "transformer.transformer_blocks.18"  # FLUX.1: the last of 19 double-stream blocks
    small = SimpleNamespace(transformer=SimpleNamespace(transformer_blocks=nn.ModuleList([nn.Identity()] * 2)))
    assert default_point(small) == "transformer.transformer_blocks.1"  # fewer blocks: the last one
    with pytest.raises(ConfigError, match="name capture points"):
        default_point(SimpleNamespace(transformer=nn.Identity()))


def test_budget_keeps_a_seeded_sorted_subset_and_pooling_uses_every_position():
    chosen = select_positions(100, 10, seed=7)
    assert torch.equal(chosen, select_positions(100, 10, seed=7)) and chosen.numel() == 10
    assert torch.equal(chosen, chosen.sort().values) and not torch.equal(chosen, select_positions(100, 10, seed=8))
    assert torch.equal(select_positions(5, 10, seed=7), torch.arange(5))
    buffer = CaptureBuffer()
    activations = torch.randn(2, 100, 3)
    buffer.add(activations, first_image=0, seeds=[1, 2], budget=10)
    buffer.add(activations[:1], first_image=2, seeds=[3], budget=None)
    tensors = buffer.tensors()
    assert tensors["positions"].shape == (120, 3) and tensors["positions"].dtype == torch.float16
    assert torch.allclose(tensors["pooled"], torch.cat([activations.mean(1), activations[:1].mean(1)]))
    assert tensors["image_index"].tolist() == [0] * 10 + [1] * 10 + [2] * 100
    assert torch.equal(tensors["positions"][:10], activations[0, select_positions(100, 10, 1)].half())


def test_capture_on_a_real_tiny_pipeline(tiny_sd):
    from precompute.generators.registry import capture_config, load_diffusers
    from precompute.config import DiffusersGeneratorConfig

    generator_config = DiffusersGeneratorConfig(name="t", kind="diffusers", model=str(tiny_sd), steps=2, width=64,
                                                height=64)
    pipe = load_diffusers(generator_config, "cpu").pipeline
    capture = capture_config(("auto",), (-1,), 2, 7.5, pipe)
    assert capture.points == ("unet.mid_block",) and capture.guided
    with apply_capture(pipe, capture) as recorder:
        pipe(["a red circle", "a blue square", "a star"], num_inference_steps=2, guidance_scale=7.5, width=64,
             height=64, generator=[torch.Generator().manual_seed(i) for i in range(3)])
        captured = recorder.take()
    assert captured[("unet.mid_block", 1)].shape == (3, 64, 16)  # conditional half only: 3 images, 8x8, 16 ch
    assert not pipe.unet.mid_block._forward_hooks and not pipe.unet._forward_pre_hooks
