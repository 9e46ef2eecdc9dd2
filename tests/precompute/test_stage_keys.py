"""Stage outputs are keyed by the content of the models they used, not only by their paths."""

from __future__ import annotations

import shutil

from precompute.config import parse_config
from precompute.generators.registry import WORLD_WEIGHTS
from precompute.stages.common import StageContext, weights_identity
from precompute.stages.generate import generator_store
from precompute.stages.train import trained_sae_dir


def _context(tmp_path, model_path, energy_model="world"):
    config = parse_config({
        "source": {"kind": "world"},
        "generators": [{"name": "wm", "kind": "world-model", "path": str(model_path)}],
        "encode": {"energy_model": energy_model},
    })
    return StageContext(config, tmp_path / "work", progress=None)


def test_retrained_generator_weights_at_the_same_path_are_a_new_generator(tmp_path):
    copy = tmp_path / "world-model"
    shutil.copytree(WORLD_WEIGHTS, copy)
    before = generator_store(_context(tmp_path, copy), _context(tmp_path, copy).config.generators[0]).digest
    unet = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(unet.read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    unet.write_bytes(bytes(data))
    ctx = _context(tmp_path, copy)
    assert generator_store(ctx, ctx.config.generators[0]).digest != before


def test_energy_model_content_keys_the_trained_sae(tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text('{"model_type": "x"}')
    (encoder / "model.safetensors").write_bytes(b"a" * 64)
    first = trained_sae_dir(_context(tmp_path, WORLD_WEIGHTS, str(encoder)))
    (encoder / "model.safetensors").write_bytes(b"b" * 64)
    assert trained_sae_dir(_context(tmp_path, WORLD_WEIGHTS, str(encoder))) != first
    assert weights_identity("org/some-hub-model") == "org/some-hub-model"
