"""Every supported pipeline family through the project's own path: load by folder, generate, capture, steer.

The paper's five generators (SD 1.5, SD 1.5 with the DPO UNet swapped in, SD 2.1,
PixArt-alpha, Kandinsky 2.1 with its prior) and RAIGen's SDXL and FLUX, each as a
tiny random-weight model of its real classes saved with ``save_pretrained``
(``tiny_pipelines``), loaded back by ``make_diffusers_generator`` like a checkpoint
folder, two images at two steps with ``capture = ["auto"]``, then one steered image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.config import DiffusersGeneratorConfig
from precompute.errors import ConfigError
from precompute.generators.registry import make_diffusers_generator, preflight_diffusers
from precompute.generators.steering import FeatureEdit, SteeringConfig, apply_steering
from precompute.sae import build_sae
from tests.precompute.generators import tiny_pipelines

pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = ["a red circle on grass", "two blue squares"]
IDS = ["item-0", "item-1"]
STEPS = 2


def config(model, **extra) -> DiffusersGeneratorConfig:
    settings = {"name": "tiny", "kind": "diffusers", "model": str(model), "steps": STEPS, "guidance": 4.0,
                "width": 64, "height": 64, "batch_size": 2, "capture": ["auto"], "capture_budget": None, **extra}
    return DiffusersGeneratorConfig(**settings)


def steered_image(generator, sae, edit: FeatureEdit, mode: str) -> tuple[np.ndarray, list[int]]:
    """One image of the first caption with ``edit`` applied at the capture point, and the steps it changed."""
    steering = SteeringConfig(point=generator.capture.points[0], edits=(edit,), mode=mode,
                              guided=generator.capture.guided)
    with apply_steering(generator.pipeline, sae, steering) as hook:
        image = generator(CAPTIONS[:1], IDS[:1])[0][0]
    return np.asarray(image), hook.steered_steps


def check_family(generator_config: DiffusersGeneratorConfig, pipeline_class: str, point: str) -> None:
    generator = make_diffusers_generator(generator_config, "cpu")
    assert generator.setup["pipeline_class"] == pipeline_class
    assert generator.capture.points == (point,)

    images = [np.asarray(image) for image, _, _ in generator(CAPTIONS, IDS)]  # generate
    assert [image.shape for image in images] == [(64, 64, 3)] * 2
    assert np.abs(images[0].astype(int) - images[1]).mean() > 0  # two items, two seeds

    captured = generator.drain_capture()  # capture: the conditional half, every position of both images
    assert list(captured) == [(point, STEPS - 1)]
    tensors = captured[(point, STEPS - 1)]
    positions, pooled = tensors["positions"].float(), tensors["pooled"]
    assert pooled.shape[0] == 2 and positions.shape[1] == pooled.shape[1]
    assert tensors["image_index"].unique().tolist() == [0, 1] and torch.isfinite(positions).all()
    torch.testing.assert_close(positions[tensors["image_index"] == 1].mean(0), pooled[1], atol=1e-2, rtol=1e-2)

    # steer: an SAE over the captured channels, as the internal lens trains one
    torch.manual_seed(0)
    sae = build_sae("topk", input_dim=positions.shape[1], n_concepts=8, k=2).eval()
    baseline = np.asarray(generator(CAPTIONS[:1], IDS[:1])[0][0])
    unchanged, steps = steered_image(generator, sae, FeatureEdit(0, 0.0), "scale")
    assert steps == list(range(STEPS)) and unchanged.tobytes() == baseline.tobytes()  # the control: strength 0
    strength = 20.0 * float(positions.norm(dim=-1).mean())
    steered, steps = steered_image(generator, sae, FeatureEdit(0, strength), "add")
    assert steps == list(range(STEPS)) and np.abs(steered.astype(int) - baseline).mean() > 1.0
    generator.drain_capture()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def test_stable_diffusion_15(tiny_sd):
    check_family(config(tiny_sd), "StableDiffusionPipeline", "unet.mid_block")


def test_stable_diffusion_15_with_a_swapped_dpo_unet(tiny_sd, tiny_sd_other):
    from diffusers import UNet2DConditionModel

    generator_config = config(tiny_sd, unet=str(tiny_sd_other))
    check_family(generator_config, "StableDiffusionPipeline", "unet.mid_block")
    swapped = make_diffusers_generator(generator_config, "cpu").pipeline.unet  # the hooks sit on the swapped UNet
    other = UNet2DConditionModel.from_pretrained(tiny_sd_other, subfolder="unet")
    assert torch.equal(swapped.mid_block.resnets[0].conv1.weight, other.mid_block.resnets[0].conv1.weight)


def test_stable_diffusion_21(models):
    folder = tiny_pipelines.save_tiny_sd(models / "sd21", version=2)
    check_family(config(folder), "StableDiffusionPipeline", "unet.mid_block")


def test_pixart_alpha(models):
    folder = tiny_pipelines.save_tiny_pixart(models / "pixart")
    check_family(config(folder), "PixArtAlphaPipeline", "transformer.transformer_blocks.1")


def test_kandinsky_21_decoder_with_its_prior(models):
    decoder, prior = tiny_pipelines.save_tiny_kandinsky(models / "kandinsky")
    check_family(config(decoder, prior=str(prior)), "KandinskyCombinedPipeline", "unet.mid_block")
    with pytest.raises(ConfigError, match="needs its prior; set prior to the KandinskyPriorPipeline"):
        preflight_diffusers(config(decoder))
    with pytest.raises(ConfigError, match="is a KandinskyPipeline; expected a KandinskyPriorPipeline"):
        preflight_diffusers(config(decoder, prior=str(decoder)))


def test_sdxl(models):
    folder = tiny_pipelines.save_tiny_sdxl(models / "sdxl")
    check_family(config(folder), "StableDiffusionXLPipeline", "unet.mid_block")


def test_flux(models):
    folder = tiny_pipelines.save_tiny_flux(models / "flux")
    # one double-stream block: block 18 of FLUX.1 maps to the last (here the only) one; guidance is distilled
    check_family(config(folder, guidance=0.0), "FluxPipeline", "transformer.transformer_blocks.0")


def test_an_unsupported_pipeline_class_lists_the_supported_families(tmp_path, tiny_sd):
    import json
    import shutil

    folder = tmp_path / "img2img"
    shutil.copytree(tiny_sd, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionImg2ImgPipeline"}))
    with pytest.raises(ConfigError, match="is a StableDiffusionImg2ImgPipeline, which is not supported") as error:
        preflight_diffusers(config(folder))
    for family in ("SD 1.5", "SD 2.1", "PixArt-alpha", "Kandinsky 2.1", "SDXL", "FLUX"):
        assert family in str(error.value)
