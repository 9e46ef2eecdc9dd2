"""Heatmap PNGs: a concept's token map on an exemplar (the concept card), a feature's spatial map (the internal
lens), both stored as uint8 grids and drawn the same way."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

# Heatmap colours (inferno anchors); alpha follows the activation, so where the concept is absent the image shows.
HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=float)


def heat_png(row: dict[str, Any]) -> bytes:
    """A stored heatmap row (``heatmap`` uint8 row-major bytes, ``grid_rows``, ``grid_cols``) as an RGBA PNG:
    colour from the HEAT ramp, alpha the activation itself."""
    grid = np.frombuffer(bytes(row["heatmap"]), dtype=np.uint8).reshape(row["grid_rows"], row["grid_cols"])
    position = grid.astype(float) / 255 * (len(HEAT) - 1)
    anchors = np.arange(len(HEAT))
    rgb = np.stack([np.interp(position, anchors, HEAT[:, c]) for c in range(3)], axis=-1)
    rgba = np.concatenate([rgb, grid[..., None].astype(float)], axis=-1).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgba).save(out, format="PNG")
    return out.getvalue()

