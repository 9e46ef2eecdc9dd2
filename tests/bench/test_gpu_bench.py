"""bench/gpu_bench.py runs at its smallest size and projects the paper's run from what it timed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import one_torch_thread

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_smallest_size_times_every_model_and_projects_the_papers_run(gpu_bench, tmp_path, capsys):
    with one_torch_thread():
        result = gpu_bench.main(["--size", "smallest", "--device", "cpu", "--json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text())["size"] == "smallest"
    measured = result["measured"]
    for key in ("unet_step_s", "vae_decode_s", "dino_image_s", "sae_encode_image_s", "sae_step_s"):
        assert measured[key] > 0, key
    rows = {row["what"].split(" (")[0]: row for row in result["projection"]}
    assert rows["VAE decode"]["count"] == 5 * 10_000  # five generators x 10,000 pairs
    assert rows["SAE encode_codes"]["count"] == 6 * 10_000  # the real images and the five generators'
    assert rows["RA-SAE training step"]["count"] == 4880
    generate = [row for row in result["projection"] if row["stage"] == "generate"]
    assert sum(row["hours"] for row in generate) == pytest.approx(5 * 10_000 * measured["generate_image_s"] / 3600)
    printed = capsys.readouterr().out
    assert "against the paper's 202 GPU-hours" in printed and "CPU-hours of this machine" in printed
    assert "not a measurement of the paper's models" in printed
