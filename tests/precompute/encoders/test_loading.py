"""``load_energy_model`` refuses bad specs before any work, with the reason."""

from __future__ import annotations

import json

import pytest

from precompute.encoders import load_energy_model
from precompute.errors import ConfigError


def test_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_energy_model(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_energy_model("./models/dino")


def test_folder_without_config_and_a_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_energy_model(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file"):
        load_energy_model(weights)


def test_unsupported_model_type_and_broken_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ConfigError, match="'resnet' is not an energy model"):
        load_energy_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_energy_model(tmp_path)


def test_bad_dtype_and_device(dinov2_dir):
    with pytest.raises(ConfigError, match="dtype must be one of"):
        load_energy_model(dinov2_dir, dtype="int8")
    with pytest.raises(ConfigError, match="device"):
        load_energy_model(dinov2_dir, device="gpu:what")


def test_bad_batch_size(dinov2_dir):
    model = load_energy_model(dinov2_dir)
    with pytest.raises(ConfigError, match="batch_size"):
        next(model.encode_batches([], batch_size=0))


def test_unreachable_hub_id_is_a_config_error(monkeypatch):
    import transformers

    def offline(name, *args, **kwargs):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(ConfigError, match="neither a local folder nor a hub model"):
        load_energy_model("facebook/dinov2-with-registers-base")
