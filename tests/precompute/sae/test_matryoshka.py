"""Matryoshka SAE: nested prefixes, prefix encoding, one loss per prefix."""

from __future__ import annotations

import pytest
import torch

from precompute.errors import ConfigError
from precompute.sae import MatryoshkaConfig
from precompute.sae.matryoshka import default_group_sizes

from .conftest import CONCEPTS, DIM, make_sae

GROUPS = (8, 8, 16, 32)


def test_default_groups_double_each_prefix():
    assert default_group_sizes(64) == GROUPS
    assert default_group_sizes(3) == (1, 2)
    assert MatryoshkaConfig(input_dim=DIM, n_concepts=CONCEPTS).group_weights == (0.25,) * 4


@pytest.mark.parametrize("with_threshold", [True, False])
def test_prefix_encoding_returns_the_first_groups_only(with_threshold):
    sae = make_sae("matryoshka").eval()
    if with_threshold:
        sae.set_threshold(0.1)
    x = torch.randn(2, 6, DIM)
    pre_codes, codes = sae.encode(x)
    for prefix, width in enumerate((8, 16, 32, 64), start=1):
        pre_prefix, codes_prefix = sae.encode(x, prefix=prefix)
        assert codes_prefix.shape == (2, 6, width)
        torch.testing.assert_close(codes_prefix, codes[..., :width])
        torch.testing.assert_close(pre_prefix, pre_codes[..., :width])
    with pytest.raises(ConfigError, match="prefix must be a group count in 1..4"):
        sae.encode(x, prefix=5)


def test_loss_has_one_part_per_prefix_and_weights_them():
    sae = make_sae("matryoshka", group_weights=[0.1, 0.2, 0.3, 0.4])
    x = torch.randn(32, DIM)
    pre_codes, codes, x_hat = sae(x)
    parts = sae.reconstruction_loss(x, pre_codes, codes, x_hat, sae)
    prefix_losses = [parts[f"mse_prefix_{g}"] for g in range(1, 5)]
    for width, loss in zip((8, 16, 32, 64), prefix_losses):
        torch.testing.assert_close(loss, (x - sae.decode(codes[:, :width])).square().mean())
    torch.testing.assert_close(parts["mse"], (x - x_hat).square().mean())
    expected = sum(w * loss for w, loss in zip((0.1, 0.2, 0.3, 0.4), prefix_losses))
    torch.testing.assert_close(parts["total"], expected)


def test_group_config_is_validated():
    with pytest.raises(ConfigError, match="sum to n_concepts=64"):
        MatryoshkaConfig(input_dim=DIM, n_concepts=64, group_sizes=[8, 8])
    with pytest.raises(ConfigError, match="one weight per group"):
        MatryoshkaConfig(input_dim=DIM, n_concepts=64, group_sizes=[32, 32], group_weights=[1.0])
    config = MatryoshkaConfig.from_dict({"input_dim": DIM, "n_concepts": 64, "group_sizes": [16, 48]})
    assert config.group_sizes == (16, 48) and config.to_dict()["group_sizes"] == [16, 48]
