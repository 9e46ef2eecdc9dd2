"""The blindspot command line: help, clear errors, and the demo's build-then-reuse."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli import cli, demo_config_path
from tests.backend.test_atlas_verify import DAMAGES

# The commands the README documents; the tree the CLI really has must be exactly these.
DOCUMENTED = [[], ["demo"], ["precompute"], ["generate"], ["serve"], ["world"], ["world", "sample"], ["sae"],
              ["sae", "train"], ["sae", "import-rasae"], ["eval"], ["eval", "world"], ["eval", "stability"],
              ["world", "train-encoder"], ["world", "train-generator"], ["world", "train-lens"], ["eval", "steer"]]


def command_tree(group: click.Group, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and group under ``group``, as the argument lists that name them."""
    found = [list(path)]
    for name, command in group.commands.items():
        found += command_tree(command, (*path, name)) if isinstance(command, click.Group) else [[*path, name]]
    return found


COMMANDS = command_tree(cli)


def test_the_command_tree_is_the_documented_one():
    assert sorted(COMMANDS) == sorted(DOCUMENTED)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "blindspot")
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 5


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Through the console-script entry, as a user runs it (error handling included)."""
    return subprocess.run([sys.executable, "-c", "from app.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_bad_config_is_one_clear_message_and_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[source]\nkind = "world"\nsize = "huge"\n[[generators]]\nname = "x"\nkind = "planted"\n'
                      'colour = "red"\n')
    result = run_cli("precompute", str(config), "--out", str(tmp_path / "atlas"))
    assert result.returncode == 2
    assert "source.size" in result.stderr and "generators[0].colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "atlas").exists()


def test_world_sample_writes_a_folder_source(tmp_path):
    result = CliRunner().invoke(cli, ["world", "sample", "--n", "6", "--seed", "4", "--out", str(tmp_path / "w"),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "w" / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    with Image.open(tmp_path / "w" / lines[0]["file"]) as image:
        assert image.size == (64, 64)


def test_demo_builds_once_then_reuses(tmp_path):
    config = tmp_path / "demo.toml"
    text = demo_config_path().read_text().replace("n_items = 2000", "n_items = 12")
    config.write_text(text)
    first = run_cli("demo", "--config", str(config), "--out", str(tmp_path / "atlas"), "--no-serve")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "atlas" / "atlas.duckdb").is_file()
    for stage in ("sample", "generate", "encode", "analyze", "build"):
        assert f"done: {stage}" in first.stderr, stage  # every stage ran and said what it did
    assert "using the SAE the config names" in first.stderr  # the shipped world lens: nothing to train
    second = run_cli("demo", "--config", str(config), "--out", str(tmp_path / "atlas"), "--no-serve")
    assert second.returncode == 0 and "reusing the atlas" in second.stderr


def test_serve_refuses_a_folder_that_is_not_an_atlas(tmp_path):
    result = run_cli("serve", str(tmp_path))
    assert result.returncode == 2 and "not an atlas" in result.stderr


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_serve_refuses_a_damaged_atlas_in_one_line_and_serves_nothing(world_atlas, tmp_path, damage):
    copy = tmp_path / "atlas"
    shutil.copytree(world_atlas, copy)
    DAMAGES[damage](copy / "atlas.duckdb")
    with socket.socket() as probe:  # a free port, should the atlas be served after all
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    # a served atlas would run until killed: 60 s is far past the refusal
    result = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "serve", str(copy),
                             "--port", port], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: damaged atlas") and str(copy / "atlas.duckdb") in lines[0]
    assert f"blindspot precompute CONFIG --out {copy}" in lines[0]
    assert "serving" not in result.stdout + result.stderr


def test_sae_train_writes_a_loadable_sae_and_reports_quality(tmp_path):
    import torch
    from safetensors.torch import save_file

    from precompute.sae import load_sae

    torch.manual_seed(0)
    atoms = torch.randn(12, 8)
    codes = torch.relu(torch.randn(2000, 12)) * (torch.rand(2000, 12) < 0.2)
    save_file({"tokens": codes @ atoms}, str(tmp_path / "tokens.safetensors"))
    result = run_cli("sae", "train", str(tmp_path / "tokens.safetensors"), "--out", str(tmp_path / "sae"),
                     "--variant", "topk", "--concepts", "24", "--k", "4", "--steps", "60", "--batch-size", "256")
    assert result.returncode == 0, result.stderr
    assert "explained variance" in result.stderr
    sae = load_sae(tmp_path / "sae")
    assert (sae.input_dim, sae.n_concepts) == (8, 24)


def test_eval_world_needs_the_analysis(world_atlas):
    result = run_cli("eval", "world", str(world_atlas))
    assert result.returncode == 2 and "no blindspot analysis" in result.stderr


def test_a_checkpoint_that_is_no_overcomplete_sae_is_one_message_and_exit_2(tmp_path):
    import torch

    torch.save(torch.nn.DataParallel(torch.nn.Linear(2, 2)), tmp_path / "other.pt")
    result = run_cli("sae", "import-rasae", str(tmp_path / "other.pt"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "found DataParallel of torch.nn.modules.linear.Linear; expected an overcomplete" in result.stderr
    assert not (tmp_path / "out").exists()


def test_install_hints_print_literally(monkeypatch, capsys):
    from app import cli as cli_module
    from precompute.errors import DataError
    from precompute.sources.hf import INSTALL_HINT

    def needs_datasets(**kwargs):
        raise DataError(f"the Hugging Face source needs the datasets package: {INSTALL_HINT}")

    monkeypatch.setattr(cli_module.cli, "main", needs_datasets)
    with pytest.raises(SystemExit) as stopped:
        cli_module.main()
    assert stopped.value.code == 2
    assert "pip install 'blindspot-atlas[datasets]'" in capsys.readouterr().err


def test_eval_steer_help_states_the_defaults_it_runs_with():
    from backend.views.internal import PROBE_FLOOR
    from backend.steering.inputs import DEFAULT_STRENGTH

    shown = " ".join(CliRunner().invoke(cli, ["eval", "steer", "--help"]).output.split())
    assert f"(default {PROBE_FLOOR:g})" in shown
    assert f"(--mode add, default {DEFAULT_STRENGTH['add']:g})" in shown
    assert f"(--mode scale, default {DEFAULT_STRENGTH['scale']:g})" in shown


def test_eval_world_prints_its_tables_and_the_null_controls_by_name(lens_atlas):
    result = run_cli("eval", "world", str(lens_atlas))
    assert result.returncode == 0, result.stderr
    assert "ground truth" in result.stderr and "detectability" in result.stderr  # the console writes to stderr
    # each null control with what the paper's thresholds alone would flag on it (not swallowed as markup)
    assert re.search(r"null flags: \d+ \(real-halves \d+ \(paper thresholds alone: \d+\)", result.stderr)
