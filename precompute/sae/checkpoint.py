"""Training checkpoints without pickles: safetensors for tensors, JSON for the rest.

A checkpoint folder ``step-000123/`` holds

* ``model/``: the SAE via ``save_pretrained`` (``config.json`` + ``model.safetensors``);
* ``optimizer.safetensors``: every tensor of the optimizer state, keyed
  ``state.<param index>.<name>`` (AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``);
* ``trainer.safetensors``: the trainer's own tensors (dead-latent counters);
* ``trainer.json``: step, configs, optimizer param groups, logged history.

It is written under a ``.tmp`` name and renamed; ``latest.json`` then points at it
(replaced atomically), and older checkpoints beyond ``keep`` are removed. A run killed
at any moment therefore resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from precompute.errors import ConfigError
from precompute.fileio import write_text_atomic
from precompute.sae.base import SAE, WEIGHTS_FILE

LATEST_FILE = "latest.json"
MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_TENSORS_FILE = "trainer.safetensors"
TRAINER_FILE = "trainer.json"


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            key = f"state.{index}.{name}"
            if isinstance(value, Tensor):
                tensors[key] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    sae: SAE,
    optimizer: torch.optim.Optimizer,
    trainer_tensors: dict[str, Tensor],
    info: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` and point ``latest.json`` at it."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:09d}"
    tmp = root / (name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    sae.save_pretrained(tmp / MODEL_DIR)
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
    save_file(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in trainer_tensors.items()},
        str(tmp / TRAINER_TENSORS_FILE),
    )
    document = {"step": step, "optimizer": opt_meta, **info}
    (tmp / TRAINER_FILE).write_text(json.dumps(document, indent=2) + "\n")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST_FILE, json.dumps({"checkpoint": name, "step": step}) + "\n")
    older = sorted(p for p in root.glob("step-*") if p.is_dir() and p.suffix != ".tmp" and p != final)
    for stale in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(stale)
    return final


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk; ``restore`` loads it into live objects."""

    path: Path
    info: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.info["step"])

    def restore(self, sae: SAE, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """Load weights and optimizer state in place; return the trainer's tensors."""
        device = next(sae.parameters()).device
        state = load_file(str(self.path / MODEL_DIR / WEIGHTS_FILE))
        expected = set(sae.state_dict())
        if set(state) != expected:
            raise ConfigError(
                f"checkpoint {self.path} does not fit this SAE: its weights are "
                f"{sorted(state)}, the model has {sorted(expected)}"
            )
        sae.load_state_dict({k: v.to(device) for k, v in state.items()})
        opt_tensors = load_file(str(self.path / OPTIMIZER_FILE))
        optimizer.load_state_dict(_optimizer_from_files(opt_tensors, self.info["optimizer"]))
        return {k: v.to(device) for k, v in load_file(str(self.path / TRAINER_TENSORS_FILE)).items()}


def clear_checkpoints(folder: str | os.PathLike) -> None:
    """Remove every checkpoint under ``folder`` (a run that starts over)."""
    root = Path(folder)
    if not root.is_dir():
        return
    for path in root.glob("step-*"):
        if path.is_dir():
            shutil.rmtree(path)
    (root / LATEST_FILE).unlink(missing_ok=True)


def latest_checkpoint(folder: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint ``latest.json`` points at, or ``None`` when there is none."""
    root = Path(folder)
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
        path = root / name
        info = json.loads((path / TRAINER_FILE).read_text())
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise ConfigError(f"checkpoint folder {root} is damaged ({err}); delete it to start over") from None
    return Checkpoint(path=path, info=info)
