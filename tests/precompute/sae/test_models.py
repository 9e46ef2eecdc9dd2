"""The contract shared by every variant: shapes, sparsity, errors, storage."""

from __future__ import annotations

import json

import pytest
import torch

from precompute.errors import ConfigError, DataError
from precompute.sae import SAE, BatchTopKSAE, MatryoshkaSAE, RASAE, SAEConfig, TopKSAE, load_sae
from precompute.sae.base import row_topk, topk_codes

from .conftest import CONCEPTS, DIM, K, make_sae

CLASSES = {"topk": TopKSAE, "batchtopk": BatchTopKSAE, "rasae": RASAE, "matryoshka": MatryoshkaSAE}


def test_forward_returns_pre_codes_codes_reconstruction_for_any_leading_shape(variant):
    sae = make_sae(variant)
    x = torch.randn(2, 5, DIM)
    pre_codes, codes, x_hat = sae(x)
    assert pre_codes.shape == codes.shape == (2, 5, CONCEPTS)
    assert x_hat.shape == x.shape
    assert (codes >= 0).all()
    flat_pre, flat_codes = sae.encode(x.reshape(10, DIM))
    torch.testing.assert_close(flat_pre, pre_codes.reshape(10, CONCEPTS))
    assert sae.dictionary.shape == (CONCEPTS, DIM)


def test_topk_keeps_at_most_k_concepts_per_token_in_training_and_eval():
    sae = make_sae("topk")
    x = torch.randn(64, DIM)
    for mode in (True, False):
        sae.train(mode)
        _, codes, _ = sae(x)
        assert ((codes > 0).sum(-1) <= K).all()


def test_batchtopk_training_keeps_k_per_token_on_average_across_the_batch():
    sae = make_sae("batchtopk")
    x = torch.randn(64, DIM)
    _, codes, _ = sae(x)
    per_token = (codes > 0).sum(-1)
    assert per_token.sum() <= K * 64
    assert per_token.max() > per_token.min()  # the batch, not each token, is budgeted


def test_batchtopk_threshold_is_the_running_mean_of_the_smallest_kept_activation():
    sae = make_sae("batchtopk")
    minima = []
    for seed in range(3):
        _, codes = sae.encode(torch.randn(32, DIM, generator=torch.Generator().manual_seed(seed)))
        minima.append(codes[codes > 0].min())
    assert int(sae.threshold_batches) == 3
    torch.testing.assert_close(sae.threshold, torch.stack(minima).mean())


def test_batchtopk_eval_applies_the_threshold():
    sae = make_sae("batchtopk").eval()
    sae.set_threshold(0.3)
    pre_codes, codes = sae.encode(torch.randn(50, DIM))
    torch.testing.assert_close(codes, pre_codes * (pre_codes > 0.3))


def test_batchtopk_without_threshold_falls_back_to_topk_in_eval():
    sae = make_sae("batchtopk").eval()
    assert not sae.threshold_is_set
    _, codes = sae.encode(torch.randn(20, DIM))
    assert ((codes > 0).sum(-1) <= K).all()


def test_threshold_must_be_finite_and_non_negative():
    sae = make_sae("batchtopk")
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="threshold"):
            sae.set_threshold(bad)


def test_encode_codes_equals_encode_in_eval(variant):
    sae = make_sae(variant).eval()
    if isinstance(sae, BatchTopKSAE):
        sae.set_threshold(0.2)
    x = torch.randn(3, 7, DIM)
    torch.testing.assert_close(sae.encode_codes(x), sae.encode(x)[1])


def test_blocked_row_topk_matches_torch_topk():
    pre = torch.randn(8, 4000)
    values, indices = row_topk(pre, 5)
    expected = pre.topk(5, dim=-1).values
    torch.testing.assert_close(values.sort(-1, descending=True).values, expected)
    torch.testing.assert_close(pre.gather(1, indices), values)
    codes = topk_codes(pre.clone(), 5, inplace=True)
    assert ((codes > 0).sum(-1) <= 5).all()


def test_save_load_round_trip_gives_identical_codes_and_writes_no_pickle(variant, tmp_path):
    sae = make_sae(variant)
    sae(torch.randn(32, DIM))  # a training step's worth of state (BatchTopK threshold)
    sae.eval()
    sae.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    for path in (tmp_path / "model").iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol marker
    assert json.loads((tmp_path / "model" / "config.json").read_text())["variant"] == variant
    loaded = load_sae(tmp_path / "model")
    assert type(loaded) is CLASSES[variant] and not loaded.training
    x = torch.randn(4, 9, DIM)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=0, atol=0)
    assert loaded.config == sae.config


def test_from_pretrained_dispatches_on_variant_and_checks_subclass(variant, tmp_path):
    make_sae(variant).save_pretrained(tmp_path)
    assert type(SAE.from_pretrained(tmp_path)) is CLASSES[variant]
    assert type(CLASSES[variant].from_pretrained(tmp_path)) is CLASSES[variant]
    if variant != "topk":
        with pytest.raises(ConfigError, match=variant):
            TopKSAE.from_pretrained(tmp_path)


def test_from_pretrained_names_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        load_sae(tmp_path / "missing")
    make_sae("topk").save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**document, "variant": "nope"}))
    with pytest.raises(ConfigError, match="'nope'.*known variants"):
        load_sae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**document, "colour": "red"}))
    with pytest.raises(ConfigError, match="colour"):
        load_sae(tmp_path)


def test_dimension_mismatch_names_both_dimensions(variant):
    sae = make_sae(variant)
    with pytest.raises(ConfigError) as err:
        sae.encode(torch.randn(3, DIM + 1))
    assert f"input_dim={DIM}" in str(err.value) and f"dimension {DIM + 1}" in str(err.value)


def test_non_finite_input_is_refused(variant):
    sae = make_sae(variant)
    x = torch.randn(4, DIM)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    with pytest.raises(DataError, match="2 NaN or infinite"):
        sae(x)


def test_config_is_validated_on_construction():
    with pytest.raises(ConfigError, match="k must be <= n_concepts"):
        SAEConfig(input_dim=4, n_concepts=8, k=9)
    with pytest.raises(ConfigError, match="input_dim must be an integer"):
        SAEConfig(input_dim=True, n_concepts=8)
    with pytest.raises(ConfigError, match="unknown SAE config key"):
        SAEConfig.from_dict({"input_dim": 4, "n_concepts": 8, "size": 3})
    with pytest.raises(ConfigError, match="needs a SAEConfig"):
        TopKSAE(object())


def test_decoder_atoms_stay_unit_norm_after_constrain():
    sae = make_sae("topk")
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.constrain_()
    torch.testing.assert_close(sae.dictionary.norm(dim=-1), torch.ones(CONCEPTS))
