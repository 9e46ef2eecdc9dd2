"""Import of the paper's pickled RA-SAE, tested without the ``overcomplete`` library.

The classes below mirror the library's structure and attribute names (``encoder.
final_block`` / ``final_activation`` / ``mlp_blocks``, ``dictionary.C`` / ``W`` /
``Relax`` / ``multiplier`` / ``delta`` / ``_fused_dictionary``, ``top_k``,
``running_threshold``) and its inference arithmetic, and serve as the reference.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from precompute.errors import ConfigError
from precompute.sae import RASAE, BatchTopKSAE, TopKSAE, import_rasae, load_sae, rasae_from_module

DIM, CONCEPTS, CANDIDATES = 12, 40, 24


class MLPEncoder(nn.Module):
    def __init__(self, dim, concepts, norm_layer=nn.Identity):
        super().__init__()
        self.mlp_blocks = nn.ModuleList()
        self.final_block = nn.Sequential(nn.Linear(dim, concepts), norm_layer(concepts))
        self.final_activation = nn.ReLU()

    def forward(self, x):
        pre = self.final_block(x)
        return pre, self.final_activation(pre)


class RelaxedArchetypalDictionary(nn.Module):
    def __init__(self, dim, concepts, points, delta=1.0):
        super().__init__()
        self.delta = delta
        self.register_buffer("C", points)
        self.W = nn.Parameter(torch.rand(concepts, points.shape[0]))
        self.Relax = nn.Parameter(torch.randn(concepts, dim))
        self.multiplier = nn.Parameter(torch.tensor(0.3))
        self._fused_dictionary = None

    def get_dictionary(self):
        if self.training:
            with torch.no_grad():
                W = torch.relu(self.W)
                W /= W.sum(dim=-1, keepdim=True) + 1e-8
                self.W.data = W
                scale = torch.clamp(self.delta / self.Relax.norm(dim=-1, keepdim=True), max=1)
                self.Relax.data *= scale
            return (self.W @ self.C + self.Relax) * torch.exp(self.multiplier)
        return self._fused_dictionary

    def train(self, mode=True):
        if not mode:
            self._fused_dictionary = self.get_dictionary()
        return super().train(mode)


class DictionaryLayer(nn.Module):
    def __init__(self, dim, concepts):
        super().__init__()
        self._weights = nn.Parameter(torch.randn(concepts, dim))

    def get_dictionary(self):
        with torch.no_grad():
            self._weights.data = self._weights / (self._weights.norm(dim=1, keepdim=True) + 1e-8)
        return self._weights


class BatchTopKSAELike(nn.Module):
    def __init__(self, encoder, dictionary, top_k=5, running_threshold=None):
        super().__init__()
        self.encoder = encoder
        self.dictionary = dictionary
        self.top_k = top_k
        self.running_threshold = running_threshold

    def get_dictionary(self):
        return self.dictionary.get_dictionary()

    def reference_codes(self, x):
        """The library's eval-mode encode: threshold if it has one, else per-row top-k."""
        _, codes = self.encoder(x)
        if self.running_threshold is not None:
            return codes * (codes >= self.running_threshold).float()
        top = torch.topk(codes, self.top_k, dim=-1)
        return torch.zeros_like(codes).scatter(-1, top.indices, top.values)


def library_model(threshold=0.1, norm_layer=nn.Identity, archetypal=True, delta=0.5):
    torch.manual_seed(0)
    encoder = MLPEncoder(DIM, CONCEPTS, norm_layer)
    if norm_layer is nn.BatchNorm1d:
        encoder.final_block[1].running_mean.normal_()
        encoder.final_block[1].running_var.uniform_(0.5, 2.0)
        encoder.final_block[1].weight.data.uniform_(0.5, 1.5)
        encoder.final_block[1].bias.data.normal_(std=0.1)
    if archetypal:
        dictionary = RelaxedArchetypalDictionary(DIM, CONCEPTS, torch.randn(CANDIDATES, DIM), delta=delta)
    else:
        dictionary = DictionaryLayer(DIM, CONCEPTS)
    model = BatchTopKSAELike(encoder, dictionary, top_k=5, running_threshold=None if threshold is None else torch.tensor(threshold))
    return model.eval()


def pickled_and_unpickled(model, tmp_path):
    torch.save(model, tmp_path / "ra_sae.pt")
    return torch.load(tmp_path / "ra_sae.pt", weights_only=False)


@pytest.mark.parametrize("fused", [False, True])
def test_converted_model_reproduces_the_library_codes_and_dictionary(fused, tmp_path):
    module = pickled_and_unpickled(library_model(threshold=0.1), tmp_path)
    sae = rasae_from_module(module, threshold=None, fused=fused)
    assert type(sae) is (BatchTopKSAE if fused else RASAE)
    assert float(sae.threshold) == pytest.approx(0.1) and sae.config.k == 5
    x = torch.randn(3, 50, DIM)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x)[1], module.reference_codes(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.dictionary, module.get_dictionary(), atol=1e-5, rtol=1e-5)
    if not fused:
        assert (sae.Lambda.norm(dim=-1) <= 0.5 + 1e-6).all()
        torch.testing.assert_close(sae.C, module.dictionary.C)
    sae.save_pretrained(tmp_path / "ours")
    torch.testing.assert_close(load_sae(tmp_path / "ours").encode(x), sae.encode(x), rtol=0, atol=0)


def test_explicit_threshold_wins_and_no_threshold_means_topk(tmp_path):
    module = pickled_and_unpickled(library_model(threshold=None), tmp_path)
    topk = rasae_from_module(module, threshold=None, fused=True)
    assert type(topk) is TopKSAE
    x = torch.randn(20, DIM)
    torch.testing.assert_close(topk.encode(x)[1], module.reference_codes(x), atol=1e-5, rtol=1e-5)
    assert float(rasae_from_module(module, threshold=0.829).threshold) == pytest.approx(0.829)


def test_batchnorm_is_folded_into_the_encoder(tmp_path):
    module = pickled_and_unpickled(library_model(threshold=0.2, norm_layer=nn.BatchNorm1d), tmp_path)
    sae = rasae_from_module(module, threshold=None)
    x = torch.randn(30, DIM)
    torch.testing.assert_close(sae.encode(x)[1], module.reference_codes(x), atol=1e-5, rtol=1e-5)


def test_plain_dictionary_converts_to_a_plain_sae(tmp_path):
    module = pickled_and_unpickled(library_model(threshold=0.2, archetypal=False), tmp_path)
    sae = rasae_from_module(module, threshold=None)
    assert type(sae) is BatchTopKSAE and not sae.config.decoder_bias
    torch.testing.assert_close(sae.dictionary.norm(dim=-1), torch.ones(CONCEPTS))


def test_layernorm_encoder_is_refused_with_a_reason(tmp_path):
    module = pickled_and_unpickled(library_model(norm_layer=nn.LayerNorm), tmp_path)
    with pytest.raises(ConfigError, match="LayerNorm"):
        rasae_from_module(module)


def test_state_dict_checkpoint_imports_without_the_library(tmp_path):
    module = library_model(threshold=0.1)
    torch.save(module.state_dict(), tmp_path / "state.pt")
    import_rasae(tmp_path / "state.pt", tmp_path / "out", threshold=0.1, top_k=5, delta=0.5)
    loaded = load_sae(tmp_path / "out")
    assert type(loaded) is RASAE and loaded.config.delta == 0.5
    x = torch.randn(10, DIM)
    torch.testing.assert_close(loaded.encode(x)[1], module.reference_codes(x), atol=1e-5, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]


def test_pickled_module_needs_the_optional_library(tmp_path, monkeypatch):
    torch.save(library_model(), tmp_path / "ra_sae.pt")
    monkeypatch.setitem(sys.modules, "overcomplete", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'blindspot-atlas\[rasae\]'"):
        import_rasae(tmp_path / "ra_sae.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_module_imports_when_the_library_is_present(tmp_path, monkeypatch):
    module = library_model(threshold=0.1)
    torch.save(module, tmp_path / "ra_sae.pt")
    monkeypatch.setitem(sys.modules, "overcomplete", types.ModuleType("overcomplete"))
    sae = import_rasae(tmp_path / "ra_sae.pt", tmp_path / "out", threshold=None)
    x = torch.randn(10, DIM)
    torch.testing.assert_close(load_sae(tmp_path / "out").encode(x)[1], module.reference_codes(x), atol=1e-5, rtol=1e-5)
    assert type(sae) is RASAE


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        import_rasae(tmp_path / "nope.pt", tmp_path / "out")
