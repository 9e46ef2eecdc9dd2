"""Sharing the generate stage over processes: shard ownership, and 1 vs 2 processes give the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from precompute.generators.distributed import ProcessSlot, current_slot
from precompute.stages.distributed import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]


def test_process_i_of_n_owns_the_shards_congruent_to_i():
    slots = [ProcessSlot(i, 3, i) for i in range(3)]
    owners = [[s.index for s in slots if s.owns(shard)] for shard in range(7)]
    assert owners == [[0], [1], [2], [0], [1], [2], [0]]
    assert ProcessSlot().owns(5) and ProcessSlot().is_main
    assert ProcessSlot().device("cpu") == "cpu" and ProcessSlot().device("cuda:3") == "cuda:3"


def test_a_plain_process_is_a_single_slot(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_slot() == ProcessSlot()


def write_config(folder: Path, model: Path) -> Path:
    path = folder / "run.toml"
    path.write_text(f"""
[run]
name = "dist"
n_items = 5

[source]
kind = "world"
size = 32

[[generators]]
name = "sd"
kind = "diffusers"
model = "{model}"
steps = 2
width = 64
height = 64
batch_size = 2
capture = ["unet.mid_block"]
""")
    return path


def generated_files(work: Path) -> dict[str, bytes]:
    folder = work / "generate" / "sd"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.suffix in (".png", ".safetensors", ".parquet")}


@pytest.mark.slow
def test_one_and_two_processes_give_identical_images_and_activations(tiny_sd, tmp_path):
    config = write_config(tmp_path, tiny_sd)
    # One thread here (the one_thread fixture) and in the launched processes (OMP_NUM_THREADS): CPU kernels
    # split sums by thread, so bit-identity needs the same thread count everywhere.
    assert torch.get_num_threads() == 1
    main([str(config), str(tmp_path / "one"), "--shard-size", "2", "--quiet"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "precompute.stages.distributed", str(config), str(tmp_path / "two"), "--shard-size", "2", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = generated_files(tmp_path / "one"), generated_files(tmp_path / "two")
    assert len([f for f in one if f.endswith(".png")]) == 5 and len([f for f in one if f.endswith(".safetensors")]) == 3
    assert one.keys() == two.keys() and all(one[f] == two[f] for f in one)
    processes = [json.loads((tmp_path / "two/generate/sd/shards" / f"{i:05d}.json").read_text())["process"]
                 for i in range(3)]
    assert processes == [0, 1, 0]
    assert (tmp_path / "two/generate/sd/manifest.json").is_file()
