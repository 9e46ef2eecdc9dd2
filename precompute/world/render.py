"""The world's renderer: a scene and a random generator in, an image and object masks out.

Every layer is drawn from signed distances at the output resolution, so images are
anti-aliased at any size without supersampling, and the hot path is a few dozen
whole-array numpy operations on small crops. Layers, back to front: background,
sun, drop shadows, objects (outline, fill, pattern), frame.

The random draws are split so that toggling an extra (shadow, frame, sun) changes
only that extra's pixels: the background has its own stream, and the layout and
extras always consume the same number of draws whatever the scene holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from precompute.errors import ConfigError
from precompute.world.backgrounds import grid, paint_background, square_wave
from precompute.world.concepts import Scene
from precompute.world.shapes import SHAPE_EXTENT, SUN_RAYS, polygon_sdf, shape_sdf

MIN_SIZE, MAX_SIZE = 8, 2048

COLOURS: dict[str, np.ndarray] = {
    name: np.array(rgb, dtype=np.float32) / 255.0
    for name, rgb in {
        "red": (222, 32, 38),
        "orange": (247, 132, 18),
        "yellow": (250, 216, 30),
        "green": (36, 158, 58),
        "blue": (34, 84, 222),
        "purple": (128, 46, 172),
        "pink": (247, 136, 190),
        "white": (249, 249, 249),
        "black": (18, 18, 20),
        "brown": (122, 72, 30),
    }.items()
}

# Object radius (canvas units) by number of objects and size; one object off-centre
# gets the smaller radii of the second table so it stays inside its half.
_RADIUS = {
    1: {"small": 0.14, "medium": 0.23, "large": 0.34},
    2: {"small": 0.09, "medium": 0.13, "large": 0.175},
    3: {"small": 0.08, "medium": 0.12, "large": 0.165},
    4: {"small": 0.075, "medium": 0.11, "large": 0.16},
}
_RADIUS_OFF_CENTRE = {"small": 0.11, "medium": 0.155, "large": 0.2}
_ANCHOR = {"centre": (0.5, 0.5), "left": (0.28, 0.5), "right": (0.72, 0.5), "top": (0.5, 0.28), "bottom": (0.5, 0.72)}
_PAIR_LAYOUTS = np.array(
    [[[0.29, 0.5], [0.71, 0.5]], [[0.5, 0.29], [0.5, 0.71]], [[0.3, 0.3], [0.7, 0.7]], [[0.3, 0.7], [0.7, 0.3]]]
)
_GRID_LAYOUT = np.array([[0.29, 0.29], [0.71, 0.29], [0.29, 0.71], [0.71, 0.71]])
_MAX_ROTATION = np.deg2rad(12.0)
_N_LAYOUT_DRAWS = 14
_N_EXTRA_DRAWS = 4


@dataclass(frozen=True)
class RenderResult:
    """A rendered scene: ``image`` uint8 (H, W, 3) and one bool mask per object (n, H, W)."""

    image: np.ndarray
    masks: np.ndarray


@dataclass(frozen=True)
class Placement:
    """One object on the canvas: centre and radius in canvas units, rotation in radians."""

    cx: float
    cy: float
    radius: float
    rotation: float


def layout(scene: Scene, u: np.ndarray) -> list[Placement]:
    """Place the scene's objects from uniform draws ``u`` (length ``_N_LAYOUT_DRAWS``)."""
    n = scene.n_objects
    jitter = (u[:8].reshape(4, 2) - 0.5) * 2.0  # in [-1, 1]
    rotations = (u[8:12] - 0.5) * 2.0 * _MAX_ROTATION
    arrangement, turn = u[12], u[13]
    if n == 1:
        anchor = np.array(_ANCHOR[scene.position or "centre"])
        table = _RADIUS[1] if scene.position in (None, "centre") else _RADIUS_OFF_CENTRE
        radius = table[scene.size]
        centres = anchor[None] + jitter[:1] * 0.03
    elif n == 2:
        radius = _RADIUS[2][scene.size]
        centres = _PAIR_LAYOUTS[int(arrangement * len(_PAIR_LAYOUTS)) % len(_PAIR_LAYOUTS)] + jitter[:2] * 0.015
    elif n == 3:
        radius = _RADIUS[3][scene.size]
        angles = turn * 2 * np.pi / 3 + np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
        centres = 0.5 + 0.235 * np.stack([np.cos(angles), -np.sin(angles)], axis=1) + jitter[:3] * 0.015
    else:
        radius = _RADIUS[4][scene.size]
        centres = _GRID_LAYOUT + jitter * 0.02
    return [Placement(float(x), float(y), radius, float(r)) for (x, y), r in zip(centres, rotations)]


def _crop(obj: Placement, size: int, reach: float) -> tuple[slice, slice]:
    """Pixel window around an object, ``reach`` canvas units beyond its centre."""
    lo_x = max(0, int(np.floor((obj.cx - reach) * size)))
    hi_x = min(size, int(np.ceil((obj.cx + reach) * size)) + 1)
    lo_y = max(0, int(np.floor((obj.cy - reach) * size)))
    hi_y = min(size, int(np.ceil((obj.cy + reach) * size)) + 1)
    return slice(lo_y, hi_y), slice(lo_x, hi_x)


def _local(obj: Placement, xs: np.ndarray, ys: np.ndarray, dx: float = 0.0, dy: float = 0.0):
    """Object-local coordinates (radius units, rotated) of the crop's pixel centres."""
    c, s = math.cos(obj.rotation), math.sin(obj.rotation)  # Python floats keep the grid float32
    px = ((xs - obj.cx - dx) / obj.radius)[None, :]
    py = ((ys - obj.cy - dy) / obj.radius)[:, None]
    return px * c + py * s, py * c - px * s


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _pattern(name: str, lx: np.ndarray, ly: np.ndarray, radius_px: float) -> np.ndarray | None:
    """Coverage of the pattern's second colour inside an object, in local coordinates."""
    if name == "solid":
        return None
    scale = radius_px  # local units -> pixels
    if name == "striped":
        period = max(3.6 / scale, 0.5)
        return square_wave((lx + ly) * 0.7071, period, scale)
    if name == "dotted":
        period = max(4.0 / scale, 0.52)
        fx = lx / period - np.round(lx / period)
        fy = ly / period - np.round(ly / period)
        dist_px = np.hypot(fx, fy) * period * scale
        return np.clip(0.3 * period * scale - dist_px + 0.5, 0.0, 1.0)
    period = max(3.6 / scale, 0.55)  # checkered
    a = square_wave(lx, period, scale)
    b = square_wave(ly, period, scale)
    return a + b - 2 * a * b


def _blend(img: np.ndarray, rgb, alpha: np.ndarray) -> None:
    """In place: ``img = img * (1 - alpha) + rgb * alpha``."""
    img += (np.asarray(rgb, dtype=np.float32) - img) * alpha[..., None]


def _draw_sun(img: np.ndarray, size: int, u: np.ndarray) -> None:
    g = grid(size)
    cx = 0.12 if u[0] < 0.5 else 0.88
    cy, disc, reach = 0.12, 0.062, 0.125
    rows, cols = _crop(Placement(cx, cy, reach, 0.0), size, reach)
    xs, ys = g.xs[cols], g.ys[rows]
    px, py = (xs - cx)[None, :], (ys - cy)[:, None]
    angle = float(u[1]) * math.pi / 6
    c, s = math.cos(angle), math.sin(angle)
    rays = polygon_sdf(SUN_RAYS, (px * c + py * s) / reach, (py * c - px * s) / reach) * reach * size
    sub = img[rows, cols]
    _blend(sub, (0.98, 0.62, 0.08), np.clip(0.5 - rays, 0.0, 1.0))
    _blend(sub, (1.0, 0.86, 0.2), np.clip(0.5 - (np.hypot(px, py) - disc) * size, 0.0, 1.0))


def _draw_frame(img: np.ndarray, size: int, u: np.ndarray) -> None:
    edge = grid(size).edge_px
    width = max(1.5, 0.055 * size)
    colour = ((0.36, 0.22, 0.12), (0.72, 0.56, 0.2), (0.1, 0.1, 0.1))[int(u[0] * 3) % 3]
    outer = np.clip(width - edge + 0.5, 0.0, 1.0)
    inner_line = outer - np.clip(width - max(0.8, 0.015 * size) - edge + 0.5, 0.0, 1.0)
    _blend(img, colour, outer)
    _blend(img, (0.92, 0.88, 0.78), inner_line)


def check_size(size: object) -> int:
    """``size`` as an int within the renderer's range, or ``ConfigError``."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"image size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return int(size)


def render(scene: Scene, size: int = 64, rng: np.random.Generator | None = None) -> RenderResult:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image with one mask per object.

    Deterministic given ``rng`` (``None`` means a fixed seed, so a bare call is
    reproducible too). Masks mark the pixels at least half covered by each object.
    """
    size = check_size(size)
    rng = rng if rng is not None else np.random.default_rng(0)
    background_rng = np.random.default_rng(rng.integers(2**63))
    u_layout = rng.random(_N_LAYOUT_DRAWS)
    u_sun, u_frame = rng.random(_N_EXTRA_DRAWS), rng.random(_N_EXTRA_DRAWS)
    colour = np.clip(COLOURS[scene.colour] + (rng.random(3).astype(np.float32) - 0.5) * 0.06, 0.0, 1.0)

    img = paint_background(scene.background, background_rng, size)
    if "sun" in scene.extras:
        _draw_sun(img, size, u_sun)

    g = grid(size)
    objects = layout(scene, u_layout)
    shadow_offset = (0.035, 0.045)
    shadow_blur_px = max(1.0, 0.03 * size)
    outline_px = max(1.0, size / 64.0)
    masks = np.zeros((len(objects), size, size), dtype=bool)
    if "shadow" in scene.extras:
        for obj in objects:
            rows, cols = _crop(obj, size, obj.radius * SHAPE_EXTENT + 0.09)  # offset + blur
            d = shape_sdf(scene.shape, *_local(obj, g.xs[cols], g.ys[rows], *shadow_offset)) * obj.radius * size
            alpha = np.clip((shadow_blur_px - d) / (2 * shadow_blur_px), 0.0, 1.0) * 0.55
            img[rows, cols] *= 1.0 - alpha[..., None]

    light = _luma(colour) > 0.45
    outline = colour * 0.45 if light else colour * 0.4 + 0.5
    second = colour * 0.4 if light else colour * 0.3 + 0.68
    for i, obj in enumerate(objects):
        rows, cols = _crop(obj, size, obj.radius * SHAPE_EXTENT + 2.0 / size)
        lx, ly = _local(obj, g.xs[cols], g.ys[rows])
        radius_px = obj.radius * size
        d = shape_sdf(scene.shape, lx, ly) * radius_px
        cover = np.clip(0.5 - d, 0.0, 1.0)
        fill = np.clip(0.5 - (d + outline_px), 0.0, 1.0)
        sub = img[rows, cols]
        _blend(sub, outline, cover)
        pattern = _pattern(scene.pattern, lx, ly, radius_px)
        if pattern is None:
            _blend(sub, colour, fill)
        else:
            paint = colour + (second - colour) * pattern[..., None]
            sub += (paint - sub) * fill[..., None]
        masks[i, rows, cols] = cover >= 0.5

    if "frame" in scene.extras:
        _draw_frame(img, size, u_frame)
    image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return RenderResult(image, masks)
