"""Training: convergence, dead latents, schedule, checkpoints and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from precompute.errors import ConfigError
from precompute.sae import TrainConfig, train_sae
from precompute.sae.losses import auxk_loss, mse_loss
from precompute.sae.train import learning_rate

from .conftest import CONCEPTS, DIM, K, make_sae, synthetic_tokens


class Killed(Exception):
    """Stands in for a killed process."""


def test_training_on_sparse_synthetic_tokens_explains_the_variance(variant, tokens):
    sae = make_sae(variant, tokens=tokens)
    report = train_sae(sae, tokens, TrainConfig(batch_size=256, steps=300, lr=1e-2, log_every=50, dead_after_tokens=5000))
    assert report.completed and report.steps == 300 and report.tokens_seen == 300 * 256
    assert report.final["explained_variance"] > 0.9
    assert report.final["l0"] <= K + 1e-6
    assert not sae.training
    with torch.no_grad():
        _, codes, x_hat = sae(tokens)
    explained = 1 - (tokens - x_hat).square().sum() / (tokens - tokens.mean(0)).square().sum()
    assert explained > 0.85  # eval mode: inference threshold / fused dictionary


def test_aux_loss_revives_dead_latents(tokens):
    dead_counts = {}
    for coef in (1 / 32, 0.0):
        sae = make_sae("topk")
        with torch.no_grad():  # half the latents can never win the top-k at first
            sae.W_enc[CONCEPTS // 2 :] *= 0.05
        config = TrainConfig(batch_size=256, steps=150, lr=1e-2, log_every=10, dead_after_tokens=1024, aux_coef=coef)
        report = train_sae(sae, tokens, config)
        dead_counts[coef] = sum(entry["dead_latents"] for entry in report.history)
        if coef:
            assert all(entry["aux"] > 0 for entry in report.history if entry["dead_latents"])
    assert dead_counts[1 / 32] < dead_counts[0.0]


def test_losses_share_one_signature_and_name_their_parts(variant):
    sae = make_sae(variant)
    x = torch.randn(32, DIM)
    pre_codes, codes, x_hat = sae(x)
    parts = sae.reconstruction_loss(x, pre_codes, codes, x_hat, sae)
    assert {"total", "mse"} <= set(parts)
    torch.testing.assert_close(parts["mse"], mse_loss(x, pre_codes, codes, x_hat, sae)["mse"])
    none_dead = auxk_loss(x, pre_codes, codes, x_hat, sae, dead_mask=torch.zeros(CONCEPTS, dtype=torch.bool))
    assert float(none_dead["total"]) == 0.0
    some_dead = auxk_loss(x, pre_codes, codes, x_hat, sae, dead_mask=torch.arange(CONCEPTS) % 2 == 0)
    assert float(some_dead["aux"].detach()) > 0
    torch.testing.assert_close(some_dead["total"], some_dead["aux"] / 32)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    config = TrainConfig(steps=100, lr=1e-3, lr_final=1e-5, warmup_frac=0.1)
    rates = [learning_rate(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(1e-5, rel=0.05)


def _weights(sae):
    return {name: tensor.clone() for name, tensor in sae.state_dict().items()}


def test_resume_after_a_kill_ends_with_bit_identical_weights(variant, tokens, tmp_path):
    config = TrainConfig(batch_size=128, steps=20, lr=1e-2, log_every=5, checkpoint_every=5, dead_after_tokens=512)
    straight = make_sae(variant, tokens=tokens)
    train_sae(straight, tokens, config)

    def kill_at_ten(metrics):
        if metrics["step"] == 10:
            raise Killed

    first = make_sae(variant, tokens=tokens)
    with pytest.raises(Killed):
        train_sae(first, tokens, config, checkpoint_dir=tmp_path, progress=kill_at_ten)
    resumed = make_sae(variant, seed=99, tokens=tokens)  # other init: all state must come from disk
    report = train_sae(resumed, tokens, config, checkpoint_dir=tmp_path)
    assert report.resumed_from == 10 and report.steps == 20
    expected = _weights(straight)
    for name, tensor in _weights(resumed).items():
        assert torch.equal(tensor, expected[name]), name


def test_checkpoints_are_safetensors_and_json_only(tokens, tmp_path):
    config = TrainConfig(batch_size=128, steps=6, log_every=2, checkpoint_every=2)
    train_sae(make_sae("batchtopk"), tokens, config, checkpoint_dir=tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # older ones pruned
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 6


def test_resume_refuses_a_checkpoint_trained_with_other_settings(tokens, tmp_path):
    train_sae(make_sae("topk"), tokens, TrainConfig(batch_size=128, steps=4, lr=1e-3), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr: 0.001 -> 0.002"):
        train_sae(make_sae("topk"), tokens, TrainConfig(batch_size=128, steps=4, lr=2e-3), checkpoint_dir=tmp_path)


def test_iterable_of_batches_and_progress_callback():
    batches = [synthetic_tokens(64, seed=s) for s in range(5)]
    seen = []
    report = train_sae(make_sae("topk"), batches, TrainConfig(epochs=2, log_every=2), progress=seen.append)
    assert report.steps == 10 and [m["step"] for m in seen] == [2, 4, 6, 8, 10]
    assert {"loss", "mse", "aux", "explained_variance", "l0", "dead_fraction", "lr"} <= set(seen[-1])
    with pytest.raises(ConfigError, match="needs TrainConfig.steps"):
        train_sae(make_sae("topk"), iter(batches), TrainConfig(epochs=1))


def test_tokens_of_another_dimension_are_refused():
    with pytest.raises(ConfigError, match="dimension 8 but the SAE expects input_dim=16"):
        train_sae(make_sae("topk"), torch.randn(100, 8), TrainConfig(steps=1))


def test_train_config_is_validated():
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(steps=3, epochs=1.0)
    with pytest.raises(ConfigError, match="amp must be one of"):
        TrainConfig(amp="fp8")
    with pytest.raises(ConfigError, match="unknown training config key"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_rasae_starts_at_the_scale_of_tokens_with_a_large_norm():
    # Layer-normed transformer tokens: a large shared mean, norm about 19 in 128 dimensions.
    g = torch.Generator().manual_seed(3)
    tokens = 2.0 * synthetic_tokens(n=4096, dim=DIM) + 3.0 * torch.randn(DIM, generator=g)
    sae = make_sae("rasae", tokens=tokens).eval()  # per-token top-k until a threshold is estimated
    with torch.no_grad():
        _, _, x_hat = sae(tokens)
    sae.train()
    # before any training the reconstruction is within a factor of two of the data's scale
    ratio = (x_hat.norm(dim=-1) / tokens.norm(dim=-1)).median()
    assert 0.5 < float(ratio) < 2.0
    report = train_sae(sae, tokens, TrainConfig(batch_size=256, steps=300, lr=1e-2, log_every=50))
    assert report.final["explained_variance"] > 0.2  # (unit encoder rows: about -4,000 on such tokens)
