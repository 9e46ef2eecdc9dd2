"""Procedural backgrounds of the world, drawn with whole-array numpy at any size.

Each painter takes a random generator and the cached pixel grid and returns a float32
(H, W, 3) image in [0, 1]. Textures are defined in canvas units (0..1), so a
background looks the same at 32 and at 512 pixels, only sharper; hard edges
(checks, mortar, text) get an analytic one-pixel coverage ramp.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of a square canvas, in canvas units, shared by all draws."""

    size: int
    xs: np.ndarray  # (W,) x of pixel centres in [0, 1]
    ys: np.ndarray  # (H,) y of pixel centres in [0, 1]
    X: np.ndarray  # (H, W)
    Y: np.ndarray  # (H, W)
    edge_px: np.ndarray  # (H, W) distance from each pixel centre to the nearest image edge, in pixels


@lru_cache(maxsize=16)
def grid(size: int) -> Grid:
    """The (cached) coordinate grid for a ``size`` x ``size`` canvas."""
    line = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    X, Y = np.meshgrid(line, line)
    px = np.minimum(line, 1.0 - line) * size
    edge = np.minimum(px[None, :], px[:, None]).astype(np.float32)
    for array in (line, X, Y, edge):
        array.setflags(write=False)
    return Grid(size, line, line, X, Y, edge)


def band(distance_px: np.ndarray, half_width_px: float) -> np.ndarray:
    """Coverage of a band ``|d| < half_width`` with a one-pixel anti-aliased edge."""
    return np.clip(half_width_px - np.abs(distance_px) + 0.5, 0.0, 1.0)


def square_wave(coord: np.ndarray, period: float, size: int) -> np.ndarray:
    """Anti-aliased 0/1 wave of ``period`` (canvas units) along ``coord``, half duty."""
    frac = coord / period - np.floor(coord / period)
    return np.clip((0.25 - np.abs(frac - 0.5)) * period * size + 0.5, 0.0, 1.0)


def _fill(g: Grid, rgb) -> np.ndarray:
    out = np.empty((g.size, g.size, 3), dtype=np.float32)
    out[:] = np.asarray(rgb, dtype=np.float32)
    return out


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return a + (b - a) * t[..., None].astype(np.float32)


def _plain_white(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return _fill(g, 0.94 + rng.uniform(-0.03, 0.04, 3))


def _plain_dark(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return _fill(g, np.array([0.13, 0.14, 0.18]) + rng.uniform(-0.04, 0.04, 3))


def _hue_away_from_sky(rng: np.random.Generator) -> float:
    # skip the blues so a gradient is never mistaken for the sky background
    h = rng.uniform(0.0, 0.78)
    return h if h < 0.5 else h + 0.22


def _gradient(rng: np.random.Generator, g: Grid) -> np.ndarray:
    h1 = _hue_away_from_sky(rng)
    h2 = (h1 + rng.uniform(0.25, 0.45)) % 1.0
    if 0.5 < h2 < 0.72:
        h2 = (h2 + 0.22) % 1.0
    c1 = colorsys.hsv_to_rgb(h1, rng.uniform(0.45, 0.8), rng.uniform(0.75, 0.98))
    c2 = colorsys.hsv_to_rgb(h2, rng.uniform(0.45, 0.8), rng.uniform(0.45, 0.75))
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    t = 0.5 + ((g.X - 0.5) * c + (g.Y - 0.5) * s) / (abs(c) + abs(s))
    return _mix(c1, c2, t)


_CHECK_PALETTES = np.array(
    [
        [[0.90, 0.90, 0.90], [0.55, 0.55, 0.57]],
        [[0.95, 0.90, 0.78], [0.62, 0.48, 0.35]],
        [[0.88, 0.92, 0.95], [0.40, 0.45, 0.55]],
        [[0.93, 0.86, 0.86], [0.55, 0.35, 0.38]],
    ],
    dtype=np.float32,
)


def _checkerboard(rng: np.random.Generator, g: Grid) -> np.ndarray:
    palette = _CHECK_PALETTES[rng.integers(len(_CHECK_PALETTES))]
    period = 2.0 / int(rng.integers(6, 9))  # 6-8 cells across
    off = rng.uniform(0, period, 2).tolist()
    a = square_wave(g.X + off[0], period, g.size)
    b = square_wave(g.Y + off[1], period, g.size)
    return _mix(palette[0], palette[1], a + b - 2 * a * b)


def _wood(rng: np.random.Generator, g: Grid) -> np.ndarray:
    light = np.array([0.80, 0.60, 0.38]) + rng.uniform(-0.05, 0.05, 3)
    dark = np.array([0.45, 0.27, 0.13]) + rng.uniform(-0.03, 0.03, 3)
    ph = rng.uniform(0, 2 * math.pi, 4).tolist()
    n_lines = rng.uniform(9, 14)
    warp = 0.035 * np.sin(2 * np.pi * 1.3 * g.X + ph[0]) + 0.012 * np.sin(2 * np.pi * 4.1 * g.X + ph[1])
    grain = (0.5 + 0.5 * np.cos(2 * np.pi * n_lines * (g.Y + warp) + ph[2])) ** 4
    fine = 0.5 + 0.5 * np.sin(2 * np.pi * (47 * g.Y + 0.4 * np.sin(2 * np.pi * 6 * g.X + ph[3])))
    plank = 1.0 / int(rng.integers(3, 5))
    seam_pos = (g.Y + rng.uniform(0, plank)) % plank
    seam = band((np.minimum(seam_pos, plank - seam_pos)) * g.size, max(0.5, 0.008 * g.size))
    t = np.clip(0.55 * grain + 0.12 * fine + 0.8 * seam, 0.0, 1.0)
    return _mix(light, dark, t)


def wrapped_bins(x: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each ``x`` among ``bins`` equal bins of a circle of circumference 1 (``x`` taken mod 1).

    In float32 a value just below 0 comes out of ``% 1.0`` as exactly 1.0, one bin past the last: it belongs to
    the last bin (the wrap-around it is), so the index is clipped there.
    """
    return np.minimum(np.floor((x % 1.0) * bins).astype(np.intp), bins - 1)


def _grass(rng: np.random.Generator, g: Grid) -> np.ndarray:
    dark = np.array([0.10, 0.32, 0.08]) + rng.uniform(-0.03, 0.03, 3)
    light = np.array([0.45, 0.72, 0.22]) + rng.uniform(-0.04, 0.04, 3)
    sway = 0.012 * np.sin(2 * np.pi * (2.5 * g.Y + rng.uniform(0, 1)))
    value = np.zeros_like(g.X)
    for blades, weight in ((70, 0.55), (130, 0.45)):  # two layers of blades, not a pixel loop
        shade = rng.uniform(0.0, 1.0, blades).astype(np.float32)
        tip = rng.uniform(0.0, 0.35, blades).astype(np.float32)
        ix = wrapped_bins(g.X + sway, blades)
        tall = np.clip((g.Y - tip[ix]) * 8.0, 0.0, 1.0)  # blades fade in below their tip
        value += weight * shade[ix] * (0.35 + 0.65 * tall)
    value *= 0.75 + 0.35 * g.Y  # lit from below a little less than from above
    return _mix(dark, light, np.clip(value, 0.0, 1.0))


def _sky(rng: np.random.Generator, g: Grid) -> np.ndarray:
    top = np.array([0.22, 0.45, 0.85]) + rng.uniform(-0.04, 0.04, 3)
    bottom = np.array([0.65, 0.82, 0.97]) + rng.uniform(-0.03, 0.02, 3)
    img = _mix(top, bottom, g.Y)
    centres = rng.uniform([0.1, 0.1], [0.9, 0.75], (3, 2)).tolist()
    widths = rng.uniform(0.08, 0.16, 3).tolist()
    cloud = np.zeros_like(g.X)
    for (cx, cy), w in zip(centres, widths):  # three clouds of three puffs each
        for dx, scale in ((-0.9, 0.75), (0.0, 1.0), (0.9, 0.7)):
            r2 = ((g.X - cx - dx * w) / (w * scale)) ** 2 + ((g.Y - cy) / (0.55 * w * scale)) ** 2
            cloud += np.exp(-r2)
    alpha = np.clip(cloud * 1.3 - 0.25, 0.0, 0.95)[..., None]
    return img * (1 - alpha) + np.float32(0.98) * alpha


def _bricks(rng: np.random.Generator, g: Grid) -> np.ndarray:
    rows = int(rng.integers(6, 10))
    bh = 1.0 / rows
    bw = 2.1 * bh
    yy = g.Y * rows + rng.uniform(0, 1)
    row = np.floor(yy).astype(np.intp)
    xx = g.X / bw + 0.5 * (row & 1).astype(np.float32)  # odd rows shift half a brick
    col = np.floor(xx).astype(np.intp)
    tints = rng.uniform(-0.09, 0.09, (rows + 2, int(np.ceil(1 / bw)) + 3))
    brick = np.array([0.62, 0.27, 0.18], dtype=np.float32) + tints[row, col][..., None].astype(np.float32)
    fy = yy - np.floor(yy)
    fx = xx - np.floor(xx)
    mortar_d = np.minimum(np.minimum(fy, 1 - fy) * bh, np.minimum(fx, 1 - fx) * bw) * g.size
    mortar = band(mortar_d, max(0.45, 0.012 * g.size))
    mortar_rgb = np.array([0.80, 0.78, 0.74], dtype=np.float32)
    return brick + (mortar_rgb - brick) * mortar[..., None]


def _document(rng: np.random.Generator, g: Grid) -> np.ndarray:
    paper = np.array([0.97, 0.96, 0.92]) + rng.uniform(-0.02, 0.01, 3)
    ink = np.array([0.18, 0.18, 0.22])
    spacing = rng.uniform(0.075, 0.095)
    top, margin = 0.08, rng.uniform(0.07, 0.11)
    n_lines = int((1.0 - 2 * top) / spacing)
    n_words = 16
    lengths = rng.uniform(0.025, 0.12, (n_lines, n_words))
    gaps = rng.uniform(0.018, 0.03, (n_lines, n_words))
    starts = (margin + np.cumsum(lengths + gaps, axis=1) - lengths - gaps).astype(np.float32)
    ends = starts + lengths.astype(np.float32)
    right = np.where(rng.random(n_lines) < 0.25, rng.uniform(0.3, 0.7, n_lines), 1.0 - margin)
    right[0] = rng.uniform(0.45, 0.65)  # a short heading
    blank = rng.random(n_lines) < 0.12
    blank[0] = False
    ends = np.minimum(ends, right[:, None].astype(np.float32))
    # (lines, words, W) coverage of each word along x, with anti-aliased ends
    edge = np.minimum(g.xs[None, None, :] - starts[..., None], ends[..., None] - g.xs[None, None, :])
    line_x = np.clip(edge * g.size + 0.5, 0.0, 1.0).max(axis=1) * ~blank[:, None]
    pos = (g.ys - top) / spacing
    line = np.clip(np.floor(pos).astype(np.intp), 0, n_lines - 1)
    height = np.where(line == 0, 0.32, 0.2) * spacing * g.size
    in_line = band((pos - np.floor(pos) - 0.5) * spacing * g.size, height / 2)
    in_line = np.where((pos >= 0) & (pos < n_lines), in_line, 0.0)
    text = line_x[line] * in_line[:, None]
    return _mix(paper, ink, text.astype(np.float32))


PAINTERS: dict[str, Callable[[np.random.Generator, Grid], np.ndarray]] = {
    "plain_white": _plain_white,
    "plain_dark": _plain_dark,
    "gradient": _gradient,
    "checkerboard_bg": _checkerboard,
    "wood": _wood,
    "grass": _grass,
    "document": _document,
    "sky": _sky,
    "bricks": _bricks,
}


def paint_background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A fresh float32 (size, size, 3) background image for the background concept ``name``."""
    return PAINTERS[name](rng, grid(size)).astype(np.float32, copy=False)
