"""Import of overcomplete checkpoints made by the library's own classes, against the library's own ``encode``.

Needs ``overcomplete`` (README, "Converting the paper's RA-SAE checkpoint"); skipped
with the reason where it is absent. The library's top-level package also imports its
vision backbones (torchvision) and plots (matplotlib, OpenCV, scikit-image); its SAE
classes need none of them, so where those are absent the SAE subpackage is imported
under an uninitialised parent package. Checkpoints are saved as the paper's code keeps
its RA-SAE (``torch.save`` of the whole object, in ``nn.DataParallel`` or not) and
converted through the ``blindspot`` command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from app.cli import cli
from precompute.sae import RASAE, load_sae

INSTALL = "pip install -c constraints.txt -e '.[rasae]' && pip install -c constraints.txt --no-deps overcomplete"
DIM, CONCEPTS, CANDIDATES = 16, 48, 32


def _overcomplete_sae():
    if importlib.util.find_spec("overcomplete") is None:
        pytest.skip(f"overcomplete is not installed ({INSTALL})", allow_module_level=True)
    try:
        return importlib.import_module("overcomplete.sae")
    except ImportError as err:  # the top-level package's vision/plotting imports; the SAE classes lack them
        top_level_error = err
    for name in [m for m in sys.modules if m == "overcomplete" or m.startswith("overcomplete.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("overcomplete")
    sys.modules["overcomplete"] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module("overcomplete.sae")
    except ImportError as err:
        pytest.skip(f"overcomplete's SAE classes do not import ({err}; the package: {top_level_error}); {INSTALL}",
                    allow_module_level=True)


oc = _overcomplete_sae()


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def tokens(n: int = 256) -> torch.Tensor:
    return torch.randn(n, DIM)


def relaxed(dictionary) -> None:
    """Move an archetypal dictionary off its identity start, as training does."""
    with torch.no_grad():
        dictionary.W.uniform_(0, 1)
        dictionary.Relax.normal_(std=0.3)
        dictionary.multiplier.fill_(0.4)


def trained_batchtopk(encoder: str = "linear", top_k: int = 2000):
    """The paper's kind of RA-SAE: overcomplete's BatchTopKSAE (top_k per batch) with an archetypal dictionary."""
    sae = oc.BatchTopKSAE(DIM, CONCEPTS, top_k=top_k, encoder_module=encoder)
    sae.dictionary = oc.RelaxedArchetypalDictionary(DIM, CONCEPTS, torch.randn(CANDIDATES, DIM), delta=1.0)
    relaxed(sae.dictionary)
    sae.train()
    with torch.no_grad():
        for _ in range(5):  # training batches set the running threshold (and BatchNorm statistics)
            sae.encode(tokens())
    return sae.eval()


def convert(checkpoint, tmp_path, *options: str):
    torch.save(checkpoint, tmp_path / "sae.pth")
    result = CliRunner().invoke(cli, ["sae", "import-rasae", str(tmp_path / "sae.pth"), "--out",
                                      str(tmp_path / "out"), *options])
    assert result.exit_code == 0, result.output
    return load_sae(tmp_path / "out"), result.output


def assert_codes_match(ours, library, n: int = 300) -> None:
    x = tokens(n)
    with torch.no_grad():
        mine, theirs = ours.encode(x)[1], library.encode(x)[1]
    assert float((mine - theirs).abs().max()) <= 1e-5
    assert torch.equal(mine != 0, theirs != 0)
    assert (theirs != 0).any()


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "dataparallel"])
def test_batchtopk_rasae_matches_the_library(wrapped, tmp_path):
    library = trained_batchtopk()
    assert library.top_k > CONCEPTS  # a per-batch count
    sae, output = convert(nn.DataParallel(library) if wrapped else library, tmp_path)
    assert type(sae) is RASAE and sae.config.k == 5
    assert float(sae.threshold) == pytest.approx(float(library.running_threshold))
    assert "inference threshold" in output
    assert_codes_match(sae, library)
    torch.testing.assert_close(sae.dictionary, library.get_dictionary(), atol=1e-5, rtol=1e-5)


def test_batchnorm_encoder_matches_the_library(tmp_path):
    library = trained_batchtopk(encoder="mlp_bn_1")
    sae, _ = convert(library, tmp_path, "--top-k", "7")
    assert sae.config.k == 7
    assert_codes_match(sae, library)


def test_ratopk_keeps_its_per_token_k(tmp_path):
    library = oc.RATopKSAE(DIM, CONCEPTS, points=torch.randn(CANDIDATES, DIM), top_k=4)
    relaxed(library.dictionary)
    library.eval()
    sae, output = convert(nn.DataParallel(library), tmp_path)
    assert sae.config.sparsity == "topk" and sae.config.k == 4 and "top-4 per token" in output
    assert_codes_match(sae, library)
    with torch.no_grad():
        assert float((sae.encode(tokens())[1] != 0).sum(-1).float().mean()) == pytest.approx(4.0)


def test_topk_with_a_plain_dictionary_matches_the_library(tmp_path):
    library = oc.TopKSAE(DIM, CONCEPTS, top_k=3)
    library.train()
    library.get_dictionary()
    library.eval()
    sae, _ = convert(library, tmp_path, "--fused")
    assert_codes_match(sae, library)
    torch.testing.assert_close(sae.dictionary, library.get_dictionary(), atol=1e-5, rtol=1e-5)


def test_unconvertible_library_models_are_named(tmp_path):
    library = oc.JumpSAE(DIM, CONCEPTS)
    torch.save(library, tmp_path / "jump.pth")
    result = CliRunner().invoke(cli, ["sae", "import-rasae", str(tmp_path / "jump.pth"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "JumpSAE, which does not convert" in str(result.exception)
