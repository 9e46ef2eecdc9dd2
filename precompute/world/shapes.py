"""Signed distance functions of the world's shapes, evaluated on pixel grids.

Shapes are drawn from exact (or boundary-exact) signed distances rather than by
rasterising polygons: coverage ``clip(0.5 - d_px, 0, 1)`` is anti-aliased at any
image size, an outline is a band of the same distance, and a blurred drop shadow
is a softer ramp of it. Coordinates are object-local, y down, in units of the
object's radius (every shape fits the unit disc, give or take a few percent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from precompute.errors import ConfigError


@dataclass(frozen=True)
class Polygon:
    """A closed polygon with its edges precomputed, shaped (E, 1, 1) to broadcast over a grid."""

    vx: np.ndarray
    vy: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    inv_len2: np.ndarray

    @classmethod
    def of(cls, vertices: np.ndarray) -> Polygon:
        """Prepare ``vertices`` (E, 2), in order around the outline."""
        v = np.asarray(vertices, dtype=np.float32)
        e = np.roll(v, -1, axis=0) - v
        col = (-1, 1, 1)
        return cls(v[:, 0].reshape(col), v[:, 1].reshape(col), e[:, 0].reshape(col), e[:, 1].reshape(col),
                   (1.0 / (e * e).sum(axis=1)).astype(np.float32).reshape(col))


def polygon_sdf(polygon: Polygon, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact signed distance to a closed polygon (negative inside), vectorised over edges.

    ``x`` (1, w) and ``y`` (h, 1) broadcast to the grid. The sign uses the
    crossing-number rule, so any simple polygon works (the star is concave).
    """
    wx = x[None] - polygon.vx
    wy = y[None] - polygon.vy
    t = np.clip((wx * polygon.ex + wy * polygon.ey) * polygon.inv_len2, 0.0, 1.0)
    bx = wx - polygon.ex * t
    by = wy - polygon.ey * t
    dist = np.sqrt((bx * bx + by * by).min(axis=0))
    above = y[None] >= polygon.vy
    below_next = y[None] < polygon.vy + polygon.ey
    left_turn = polygon.ex * wy > polygon.ey * wx
    crosses = (above & below_next & left_turn) | (~above & ~below_next & ~left_turn)
    inside = (crosses.sum(axis=0) & 1).astype(bool)
    dist[inside] *= -1.0
    return dist


def _regular(n: int, radius: float, phase: float, inner: float | None = None, shift_y: float = 0.0) -> np.ndarray:
    """Vertices of a regular polygon (or a star when ``inner`` is given)."""
    if inner is None:
        angles = phase + 2 * np.pi * np.arange(n) / n
        radii = np.full(n, radius)
    else:
        angles = phase + np.pi * np.arange(2 * n) / n
        radii = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles) + shift_y], axis=1).astype(np.float32)


_UP = -np.pi / 2  # y points down, so "up" is -90 degrees
_POLYGONS: dict[str, Polygon] = {
    "triangle": Polygon.of(np.array([[0.0, -0.8], [0.92, 0.8], [-0.92, 0.8]])),
    "star": Polygon.of(_regular(5, 1.08, _UP, inner=0.44, shift_y=0.1)),
    "hexagon": Polygon.of(_regular(6, 0.98, 0.0)),
    "diamond": Polygon.of(np.array([[0.0, -1.02], [0.68, 0.0], [0.0, 1.02], [-0.68, 0.0]])),
}
SUN_RAYS = Polygon.of(_regular(12, 1.0, 0.0, inner=0.6))


def _box(x: np.ndarray, y: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx = np.abs(x) - hx
    qy = np.abs(y) - hy
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.hypot(x, y) - 0.95


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(x, y) - 0.7) - 0.28


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _box(x, y, 0.8, 0.8)


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.minimum(_box(x, y, 0.98, 0.32), _box(x, y, 0.32, 0.98))


def _crescent(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # a disc with an offset disc cut out: thick on the left, horns pointing right
    return np.maximum(np.hypot(x, y) - 0.95, 0.8 - np.hypot(x - 0.45, y + 0.12))


_HEART_SCALE = 0.58  # maps the unit-radius frame onto the heart formula's frame


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Heart formula with the tip at the origin and the lobes up (y up); exact distance.
    px = np.abs(x) * _HEART_SCALE
    py = (0.98 - y) * _HEART_SCALE
    lobe = np.hypot(px - 0.25, py - 0.75) - math.sqrt(2.0) / 4.0
    m = 0.5 * np.maximum(px + py, 0.0)
    body = np.sqrt(np.minimum(px * px + (py - 1.0) ** 2, (px - m) ** 2 + (py - m) ** 2)) * np.sign(px - py)
    return np.where(px + py > 1.0, lobe, body) / _HEART_SCALE


_ANALYTIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "ring": _ring,
    "square": _square,
    "cross": _cross,
    "crescent": _crescent,
    "heart": _heart,
}

# Half-extent of each shape in the unit frame, so crops are never too small.
SHAPE_EXTENT = 1.1


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (object-radius units, negative inside) of ``shape`` at local ``x, y``."""
    if shape in _ANALYTIC:
        return _ANALYTIC[shape](x, y)
    if shape in _POLYGONS:
        return polygon_sdf(_POLYGONS[shape], x, y)
    raise ConfigError(f"no drawing for shape {shape!r}; expected one of {sorted(_ANALYTIC) + sorted(_POLYGONS)}")
