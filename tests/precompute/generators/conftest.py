"""Tiny random-weight diffusers pipelines saved to disk, loaded back by path like real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import one_torch_thread
from tests.precompute.generators.tiny_pipelines import save_tiny_sd


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A saved tiny Stable Diffusion pipeline folder."""
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_sd_other(tmp_path_factory) -> Path:
    """A second tiny pipeline with other weights (its UNet is the swap-in)."""
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-other", seed=1)


@pytest.fixture
def one_thread():
    """One torch thread for the test (see ``one_torch_thread``)."""
    with one_torch_thread():
        yield
