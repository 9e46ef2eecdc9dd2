"""Shared fixtures: tiny world configs and atlases built in code."""

from __future__ import annotations

import os

# One compute thread per test worker (the suite runs on every core through pytest-xdist, see pyproject.toml's
# addopts): set before this worker first imports numpy or torch; a value the caller set wins.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from precompute.config import RunConfig, parse_config  # noqa: E402


@contextmanager
def silent_progress(total, description, unit):
    yield lambda n=1: None


@contextmanager
def one_torch_thread():
    """One torch thread inside the block: tiny models gain nothing from threads, and on a busy 2-core machine
    spin-waiting threads make them up to 10x slower. The previous count is restored, even on error."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def world_config(n_items: int = 40, **run) -> RunConfig:
    """The embedded world against two planted generators, one with effects."""
    return parse_config({
        "run": {"name": "test-world", "n_items": n_items, **run},
        "source": {"kind": "world", "seed": 3, "size": 32},
        "generators": [
            {"name": "planted-a", "kind": "planted", "seed": 1, "effects": [
                {"effect": "suppress", "concept": "star", "rate": 1.0, "replace_with": "circle"},
                {"effect": "add", "concept": "shadow", "rate": 1.0},
            ]},
            {"name": "plain", "kind": "planted", "seed": 2},
        ],
    })


# The stages that need no energy model: sampling, planted generation, the atlas.
BASIC_STAGES = ("sample", "generate", "build")


def build_atlas(out: Path, config: RunConfig | None = None, **kw) -> Path:
    from precompute.pipeline import run_pipeline

    if "stages" not in kw:
        kw["stages"] = BASIC_STAGES
    run_pipeline(config or world_config(), out, progress=silent_progress, **kw)
    return out


@pytest.fixture(scope="session")
def world_atlas(tmp_path_factory) -> Path:
    """A small world atlas shared by read-side tests (never modified by them)."""
    return build_atlas(tmp_path_factory.mktemp("atlas") / "atlas")


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory) -> Path:
    """A tiny random-weight DINOv2-with-registers saved to a local folder (the real class and code path)."""
    import torch
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, patch_size=14, image_size=224, num_register_tokens=4)
    folder = tmp_path_factory.mktemp("models") / "tiny-dinov2"
    Dinov2WithRegistersModel(config).eval().save_pretrained(folder)
    return folder


LENS_ITEMS = 96  # pairs of the lens atlas: enough for its planted effect to be significant


def lens_config(model, **encode):
    return parse_config({
        "run": {"n_items": LENS_ITEMS, "name": "lens"},
        "source": {"kind": "world", "size": 32, "seed": 5},
        "generators": [
            # four objects where the caption asks for one: a change the tiny random lens measures on half the
            # pairs, so some of its flags are significant (its other deltas are noise, never flagged)
            {"name": "planted", "kind": "planted", "effects": [
                {"effect": "add", "concept": "shadow", "rate": 1.0},
                {"effect": "suppress", "concept": "count_one", "rate": 1.0, "replace_with": "count_four"}]},
            {"name": "same", "kind": "planted"},
        ],
        "encode": {"energy_model": str(model), "n_concepts": 48, "k": 4, "train_epochs": 1,
                   "train_batch_size": 512, "batch_size": 16, "exemplars": 3, **encode},
        # the normal approximation: more power than the exact bound on 96 pairs of a tiny random lens
        "analysis": {"bootstrap": 50, "temperature": "auto", "pvalue_rule": "normal"},
    })


@pytest.fixture(scope="session")
def lens_atlas(tiny_dinov2, tmp_path_factory) -> Path:
    """A world atlas through every output-lens stage, with a tiny random DINOv2 (shared, read-only)."""
    from precompute.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("lens") / "atlas"
    report = run_pipeline(lens_config(tiny_dinov2), out, progress=silent_progress)
    if report.ran != ["sample", "generate", "train", "encode", "analyze", "build"]:
        raise RuntimeError(f"the lens atlas fixture ran only {report.ran}")
    return out


@pytest.fixture(scope="session")
def world_internal_sae(tmp_path_factory) -> Path:
    """An internal-lens SAE (Matryoshka BatchTopK) fitted for a few steps on the shipped world model's bottleneck."""
    from tests.steering_support import fit_internal_sae

    return fit_internal_sae(tmp_path_factory.mktemp("internal-sae") / "world-model")


@pytest.fixture(scope="session")
def world_output_sae(tmp_path_factory) -> Path:
    """An output-lens SAE (TopK, 32 concepts) fitted for a few steps on world-encoder tokens."""
    from tests.steering_support import fit_output_sae

    return fit_output_sae(tmp_path_factory.mktemp("output-sae") / "sae")


@pytest.fixture(scope="session")
def internal_atlas(tmp_path_factory) -> Path:
    """A world atlas through every stage including the internal lens of the world model (shared, read-only)."""
    from precompute.pipeline import run_pipeline
    from tests.steering_support import internal_config

    out = tmp_path_factory.mktemp("internal") / "atlas"
    report = run_pipeline(internal_config(), out, progress=silent_progress)
    if "internal" not in report.ran:
        raise RuntimeError(f"the internal atlas fixture ran only {report.ran}")
    return out
