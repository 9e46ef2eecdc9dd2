"""The device a model runs on: ``"auto"`` resolved to CUDA where a GPU is present."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """'auto' is CUDA when a GPU is present, else the CPU; anything else is taken as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
