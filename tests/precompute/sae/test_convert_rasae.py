"""Import of overcomplete SAE checkpoints, tested with structural stand-ins of the library's classes.

The classes below carry overcomplete's import paths, names and attribute layout
(``encoder.final_block`` / ``final_activation`` / ``mlp_blocks``, ``dictionary.C`` /
``W`` / ``Relax`` / ``multiplier`` / ``delta`` / ``_fused_dictionary``, ``top_k``,
``running_threshold``) and its eval-mode arithmetic, and serve as the reference. They
are pickled whole with ``torch.save`` as the paper's code keeps its SAE; the converter
reads the file back without them (test_convert_rasae_overcomplete.py repeats the
check with the library's own classes where it is installed).
"""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from torch import nn

from precompute.errors import ConfigError
import precompute.sae as project
from precompute.sae import RASAE, import_rasae, load_sae, rasae_from_module
from precompute.sae.convert_rasae import load_checkpoint

DIM, CONCEPTS, CANDIDATES = 12, 40, 24


class MLPEncoder(nn.Module):
    def __init__(self, dim, concepts, norm_layer=nn.Identity):
        super().__init__()
        self.norm_layer = norm_layer
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


def normalize_l2(x):
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + 1e-8)


class DictionaryLayer(nn.Module):
    def __init__(self, dim, concepts):
        super().__init__()
        self.normalization = normalize_l2
        self._weights = nn.Parameter(torch.randn(concepts, dim))
        self.register_buffer("multiplier", torch.tensor(0.0))
        self._fused_dictionary = None

    def get_dictionary(self):
        if self.training:
            with torch.no_grad():
                self._weights.data = self.normalization(self._weights)
            return self._weights * torch.exp(self.multiplier)
        return self._fused_dictionary

    def train(self, mode=True):
        if not mode:
            self._fused_dictionary = self.get_dictionary()
        return super().train(mode)


class BatchTopKSAE(nn.Module):
    """``top_k`` counts codes per training batch; eval keeps ``codes >= running_threshold``."""

    def __init__(self, encoder, dictionary, top_k=200, running_threshold=None):
        super().__init__()
        self.encoder = encoder
        self.dictionary = dictionary
        self.top_k = top_k
        self.running_threshold = running_threshold

    def encode(self, x):
        pre, codes = self.encoder(x)
        return pre, codes * (codes >= self.running_threshold).float()


class TopKSAE(nn.Module):
    """``top_k`` codes per token."""

    def __init__(self, encoder, dictionary, top_k=5):
        super().__init__()
        self.encoder = encoder
        self.dictionary = dictionary
        self.top_k = top_k

    def encode(self, x):
        pre, codes = self.encoder(x)
        top = torch.topk(codes, self.top_k, dim=-1)
        return pre, torch.zeros_like(codes).scatter(-1, top.indices, top.values)


class RATopKSAE(TopKSAE):
    pass


class JumpSAE(TopKSAE):
    pass


PATHS = {MLPEncoder: "modules", RelaxedArchetypalDictionary: "archetypal_dictionary", DictionaryLayer: "dictionary",
         normalize_l2: "dictionary", BatchTopKSAE: "batchtopk_sae", TopKSAE: "topk_sae", RATopKSAE: "rasae",
         JumpSAE: "jump_sae"}
for _obj, _module in PATHS.items():
    _obj.__module__ = f"overcomplete.sae.{_module}"


@pytest.fixture(autouse=True)
def overcomplete_paths(monkeypatch):
    """Make the stand-ins picklable under overcomplete's import paths (the library itself stays absent)."""
    names = ("overcomplete", "overcomplete.sae", *{f"overcomplete.sae.{module}" for module in PATHS.values()})
    modules = {name: types.ModuleType(name) for name in names}
    for obj, module in PATHS.items():
        setattr(modules[f"overcomplete.sae.{module}"], obj.__name__, obj)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def encoder(norm_layer=nn.Identity):
    torch.manual_seed(0)
    module = MLPEncoder(DIM, CONCEPTS, norm_layer)
    if norm_layer is nn.BatchNorm1d:
        norm = module.final_block[1]
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.normal_(std=0.1)
    return module


def archetypal(delta=0.5):
    return RelaxedArchetypalDictionary(DIM, CONCEPTS, torch.randn(CANDIDATES, DIM), delta=delta)


def batchtopk_model(threshold=0.1, norm_layer=nn.Identity, dictionary=None, top_k=200):
    """A BatchTopKSAE as the paper keeps its RA-SAE: per-batch top_k, running threshold, archetypal dictionary."""
    enc = encoder(norm_layer)
    running = None if threshold is None else torch.tensor(threshold)
    return BatchTopKSAE(enc, dictionary or archetypal(), top_k=top_k, running_threshold=running).eval()


def saved(obj, tmp_path, name="sae.pt"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def assert_same_codes(sae, reference, x):
    ours, theirs = sae.encode(x)[1], reference.encode(x)[1]
    assert float((ours - theirs).abs().max()) <= 1e-5
    assert torch.equal(ours != 0, theirs != 0)


@pytest.mark.parametrize("fused", [False, True])
def test_batchtopk_checkpoint_converts_with_its_own_threshold(fused, tmp_path):
    model = batchtopk_model(threshold=0.1)
    sae = import_rasae(saved(model, tmp_path), tmp_path / "out", fused=fused)
    assert type(sae) is (project.BatchTopKSAE if fused else RASAE)
    assert float(sae.threshold) == pytest.approx(0.1)
    assert sae.config.k == 5  # top_k = 200 counts codes per batch: not a per-token k
    x = torch.randn(150, DIM)
    with torch.no_grad():
        assert_same_codes(sae, model, x)
        torch.testing.assert_close(sae.dictionary, model.dictionary.get_dictionary(), atol=1e-5, rtol=1e-5)
    if not fused:
        assert (sae.Lambda.norm(dim=-1) <= 0.5 + 1e-6).all()
    torch.testing.assert_close(load_sae(tmp_path / "out").encode(x), sae.encode(x), rtol=0, atol=0)


def test_dataparallel_wrapped_checkpoint_converts_as_the_papers_code_uses_it(tmp_path):
    model = batchtopk_model(threshold=0.2)
    sae = import_rasae(saved(nn.DataParallel(model), tmp_path), tmp_path / "out", top_k=8)
    assert sae.config.k == 8 and float(sae.threshold) == pytest.approx(0.2)
    with torch.no_grad():
        assert_same_codes(sae, model, torch.randn(64, DIM))


def test_a_given_threshold_wins_over_the_checkpoints(tmp_path):
    sae = import_rasae(saved(batchtopk_model(threshold=0.1), tmp_path), tmp_path / "out", threshold=0.829)
    assert float(sae.threshold) == pytest.approx(0.829)


def test_batchtopk_without_a_running_threshold_asks_for_one(tmp_path):
    with pytest.raises(ConfigError, match="no running_threshold.*0.829"):
        import_rasae(saved(batchtopk_model(threshold=None), tmp_path), tmp_path / "out")


def test_ratopk_keeps_k_codes_per_token_and_takes_no_threshold(tmp_path):
    model = RATopKSAE(encoder(), archetypal(), top_k=4).eval()
    sae = import_rasae(saved(model, tmp_path), tmp_path / "out")
    assert type(sae) is RASAE and sae.config.sparsity == "topk" and sae.config.k == 4
    x = torch.randn(100, DIM)
    with torch.no_grad():
        assert_same_codes(sae, model, x)
        assert (sae.encode(x)[1] != 0).sum(-1).float().mean() == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="RATopKSAE.*no threshold"):
        import_rasae(tmp_path / "sae.pt", tmp_path / "out2", threshold=0.829)


def test_topk_with_a_plain_dictionary_converts_to_a_plain_sae(tmp_path):
    model = TopKSAE(encoder(), DictionaryLayer(DIM, CONCEPTS), top_k=3)
    model.train()
    model.dictionary.get_dictionary()  # training normalises the atoms, eval fuses them
    model.eval()
    sae = import_rasae(saved(nn.DataParallel(model), tmp_path), tmp_path / "out")
    assert type(sae) is project.TopKSAE and not sae.config.decoder_bias and sae.config.k == 3
    torch.testing.assert_close(sae.dictionary.norm(dim=-1), torch.ones(CONCEPTS))
    with torch.no_grad():
        assert_same_codes(sae, model, torch.randn(40, DIM))


def test_batchnorm_is_folded_into_the_encoder(tmp_path):
    model = batchtopk_model(threshold=0.2, norm_layer=nn.BatchNorm1d)
    sae = rasae_from_module(model)
    with torch.no_grad():
        assert_same_codes(sae, model, torch.randn(30, DIM))


def test_layernorm_encoder_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ConfigError, match="LayerNorm"):
        import_rasae(saved(batchtopk_model(norm_layer=nn.LayerNorm), tmp_path), tmp_path / "out")


def test_state_dict_checkpoint_converts(tmp_path):
    model = batchtopk_model(threshold=0.1)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    import_rasae(tmp_path / "state.pt", tmp_path / "out", threshold=0.1, top_k=5, delta=0.5)
    loaded = load_sae(tmp_path / "out")
    assert type(loaded) is RASAE and loaded.config.delta == 0.5
    with torch.no_grad():
        assert_same_codes(loaded, model, torch.randn(10, DIM))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]


def test_no_code_from_the_pickle_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"sae": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match=r"needs (posix|os)\.system.*expected an overcomplete"):
        import_rasae(tmp_path / "evil.pt", tmp_path / "out")
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)


@pytest.mark.parametrize(("checkpoint", "found"), [
    (lambda: nn.DataParallel(nn.Linear(3, 3)), r"found DataParallel of torch\.nn\.modules\.linear\.Linear"),
    (lambda: nn.Linear(3, 3), r"found torch\.nn\.modules\.linear\.Linear"),
    (lambda: Net(), r"needs tests\.precompute\.sae\.test_convert_rasae\.Net"),
    (lambda: JumpSAE(encoder(), archetypal()), r"found overcomplete\.sae\.jump_sae\.JumpSAE, which does not convert"),
    (lambda: torch.zeros(3), r"holds a torch\.Tensor"),
    (lambda: nn.Linear(3, 3).state_dict(), r"no encoder weights.*found keys \['bias', 'weight'\]"),
    (lambda: {"step": 3}, r"holds a mapping with int values"),
])
def test_what_is_not_an_overcomplete_sae_is_named_against_what_was_expected(checkpoint, found, tmp_path):
    with pytest.raises(ConfigError, match=found) as error:
        import_rasae(saved(checkpoint(), tmp_path), tmp_path / "out")
    assert "expected" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_checkpoint_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="notes.txt is not a torch checkpoint.*expected an overcomplete"):
        load_checkpoint(tmp_path / "notes.txt")
    (tmp_path / "broken.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ConfigError, match="broken.pt is not a readable torch checkpoint.*expected an overcomplete"):
        load_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        import_rasae(tmp_path / "nope.pt", tmp_path / "out")
