"""The training stage over token shards on disk."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from precompute.errors import ConfigError, DataError
from precompute.sae import load_sae, train_sae_from_tokens_file

from .conftest import CONCEPTS, DIM, K, synthetic_tokens

CONFIG = {"batch_size": 128, "epochs": 2.0, "log_every": 2, "checkpoint_every": 3}


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "tokens"
    folder.mkdir()
    for index in range(3):
        save_file({"tokens": synthetic_tokens(300, seed=index)}, str(folder / f"shard-{index}.safetensors"))
    return folder


@pytest.mark.parametrize("variant", ["batchtopk", "rasae"])
def test_train_from_token_shards_writes_the_model_and_is_idempotent(variant, shards, tmp_path):
    out = tmp_path / "sae"
    config = CONFIG
    report = train_sae_from_tokens_file(shards, variant, {"n_concepts": CONCEPTS, "k": K}, config, out, kmeans_iters=3)
    assert report.completed and report.steps == 2 * (900 // 128)
    for name in ("config.json", "model.safetensors", "train_config.json", "train_report.json"):
        assert (out / name).is_file()
    sae = load_sae(out)
    assert sae.variant == variant and sae.input_dim == DIM
    again = train_sae_from_tokens_file(shards, variant, {"n_concepts": CONCEPTS, "k": K}, config, out)
    assert again.resumed_from == report.steps and again.history == report.history
    with pytest.raises(ConfigError, match="input_dim=8 but the tokens"):
        train_sae_from_tokens_file(shards, variant, {"input_dim": 8, "n_concepts": 16}, config, tmp_path / "x")


def test_resume_false_starts_over(shards, tmp_path):
    out = tmp_path / "sae"
    first = train_sae_from_tokens_file(shards, "topk", {"n_concepts": CONCEPTS, "k": K}, CONFIG, out)
    again = train_sae_from_tokens_file(shards, "topk", {"n_concepts": CONCEPTS, "k": K}, CONFIG, out, resume=False)
    assert again.resumed_from is None and again.steps == first.steps


def test_single_file_and_bad_inputs_are_named(tmp_path):
    save_file({"tokens": synthetic_tokens(200)}, str(tmp_path / "one.safetensors"))
    report = train_sae_from_tokens_file(
        tmp_path / "one.safetensors", "topk", {"n_concepts": CONCEPTS, "k": K}, {"batch_size": 64, "steps": 3}, tmp_path / "a"
    )
    assert report.steps == 3
    with pytest.raises(ConfigError, match="unknown SAE variant 'dense'"):
        train_sae_from_tokens_file(tmp_path / "one.safetensors", "dense", {"n_concepts": 8}, {}, tmp_path / "b")
    save_file({"acts": synthetic_tokens(10)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(DataError, match="no 'tokens' tensor"):
        train_sae_from_tokens_file(tmp_path / "bad.safetensors", "topk", {"n_concepts": 8}, {}, tmp_path / "c")
    with pytest.raises(ConfigError, match="does not exist"):
        train_sae_from_tokens_file(tmp_path / "none", "topk", {"n_concepts": 8}, {}, tmp_path / "d")
