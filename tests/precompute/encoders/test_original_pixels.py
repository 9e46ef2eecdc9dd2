"""What the energy model sees of a real image: its original pixels, with the model's resize the only one;
and, with ``encode.jpeg_roundtrip``, the JPEG round trip the paper's code applies to real and generated images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.config import parse_config
from precompute.encoders import load_energy_model
from precompute.images import jpeg_roundtrip
from precompute.sae import build_sae
from precompute.stages.common import StageContext
from precompute.encoders.lens import Lens
from precompute.stages.encode import lens_digest, open_lens
from precompute.stages.images import image_sets
from precompute.stages.sample import run_sample, sample_store
from precompute.images import load_images
from tests.conftest import one_torch_thread, silent_progress


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def wide_photo() -> Image.Image:
    """A 2000x400 image with detail at every scale (smooth gradients plus noise), so every resize shows."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 12 * np.pi, 2000)[None, :, None]
    y = np.linspace(0, 3 * np.pi, 400)[:, None, None]
    smooth = 127 + 80 * np.sin(x + y * np.array([1.0, 2.0, 3.0]))
    return Image.fromarray(np.clip(smooth + rng.normal(0, 30, (400, 2000, 3)), 0, 255).astype(np.uint8))


def folder_run(tmp_path, image: Image.Image, **encode) -> StageContext:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    image.save(data / "wide.png")
    (data / "captions.jsonl").write_text(json.dumps({"file": "wide.png", "caption": "a wide photo"}) + "\n")
    config = parse_config({"run": {"n_items": 1}, "source": {"kind": "folder", "path": str(data)}, "encode": encode})
    ctx = StageContext(config, tmp_path / "work", progress=silent_progress)
    run_sample(ctx)
    return ctx


def test_a_wide_real_image_reaches_dinov2_as_its_original_pixels(dinov2_reg_dir, tmp_path):
    original = wide_photo()
    ctx = folder_run(tmp_path, original)
    model = load_energy_model(str(dinov2_reg_dir))
    seen = model.preprocess(load_images(image_sets(ctx)[0].paths))  # what the train and encode stages feed it
    torch.testing.assert_close(seen, model.preprocess([original]), rtol=0, atol=0)  # resizing the original, once

    # the atlas keeps its own copy at most max_image_side long; resized again it is not what the paper's code sees
    shown = sample_store(ctx).folder / "images" / "0000000.png"
    with Image.open(shown) as copy:
        assert copy.size == (512, 102)
        twice = model.preprocess([copy.convert("RGB")])
    assert float((twice - seen).abs().mean()) > 0.05


def test_an_image_that_fits_is_stored_once(tmp_path):
    ctx = folder_run(tmp_path, wide_photo().resize((500, 100)))
    assert image_sets(ctx)[0].paths == [sample_store(ctx).folder / "images" / "0000000.png"]
    assert not (sample_store(ctx).folder / "originals").exists()


def test_jpeg_roundtrip_is_the_papers_lossy_step_at_pils_default_quality():
    image = wide_photo().resize((300, 60))
    once = jpeg_roundtrip(image)
    assert once.size == image.size and np.array_equal(np.asarray(once), np.asarray(jpeg_roundtrip(image, 75)))
    error = np.abs(np.asarray(once, dtype=int) - np.asarray(image)).mean()
    assert 1.0 < error < np.abs(np.asarray(jpeg_roundtrip(image, 20), dtype=int) - np.asarray(image)).mean()


def test_the_lens_encodes_both_sides_after_the_round_trip_when_asked(tmp_path):
    sae_dir = tmp_path / "sae"
    world = load_energy_model("world")
    torch.manual_seed(0)
    build_sae("topk", input_dim=world.dim, n_concepts=16, k=2).save_pretrained(sae_dir)
    image = wide_photo().resize((64, 64))
    plain = folder_run(tmp_path / "plain", image, energy_model="world", sae=str(sae_dir))
    jpeg = folder_run(tmp_path / "jpeg", image, energy_model="world", sae=str(sae_dir), jpeg_roundtrip=True)
    paths = image_sets(jpeg)[0].paths
    assert lens_digest(plain) != lens_digest(jpeg)  # a lens of its own: outputs are never mixed
    lens = open_lens(jpeg)  # real and generated images both go through Lens.codes
    energies = lens.energies(paths)
    roundtripped = tmp_path / "roundtripped.png"
    jpeg_roundtrip(image).save(roundtripped)
    without = Lens.from_parts(world, lens.sae, False)  # the same energy model and SAE, no round trip
    torch.testing.assert_close(energies, without.energies([roundtripped]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(energies, open_lens(plain).energies(paths))
