"""The renderer: shapes, sizes, masks, anti-aliasing, determinism, distinguishable concepts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from precompute.errors import ConfigError
from precompute.world import FAMILIES, FAMILY_MEMBERS, Scene, render, sample_scene
from precompute.world.backgrounds import grid, paint_background, wrapped_bins


def _scene(**kw) -> Scene:
    values = dict(shape="circle", colour="red", pattern="solid", count="count_one", size="large",
                  position="centre", background="plain_white", extras=frozenset())
    values.update(kw)
    if values["count"] != "count_one":
        values["position"] = None
    return Scene(**values)


@pytest.mark.parametrize("size", [16, 32, 64, 200])
def test_any_size_gives_rgb_image_and_one_mask_per_object(size):
    rng = np.random.default_rng(size)
    for _ in range(8):
        scene = sample_scene(rng)
        drawn = render(scene, size, rng)
        assert drawn.image.shape == (size, size, 3) and drawn.image.dtype == np.uint8
        assert drawn.masks.shape == (scene.n_objects, size, size) and drawn.masks.dtype == bool
        assert drawn.masks.any(axis=(1, 2)).all()
        assert drawn.masks.sum(axis=0).max() <= 1  # objects do not overlap


@pytest.mark.parametrize("size", [32, 64, 200])
@pytest.mark.parametrize("shape", FAMILY_MEMBERS["shape"])
def test_masks_cover_the_objects(size, shape):
    scene = _scene(shape=shape, colour="blue", count="count_two", size="medium")
    drawn = render(scene, size, np.random.default_rng(1))
    background = drawn.image[0, 0].astype(int)
    inside = drawn.image[drawn.masks.any(axis=0)].astype(int)
    outside = drawn.image[~drawn.masks.any(axis=0)].astype(int)
    assert (np.abs(inside - background).sum(axis=1) > 60).mean() > 0.95
    assert (np.abs(outside - background).sum(axis=1) < 30).mean() > 0.9


def test_edges_are_anti_aliased():
    drawn = render(_scene(colour="black"), 64, np.random.default_rng(0))
    grey = drawn.image[..., 0]
    bg, fg = int(grey[0, 0]), int(grey[32, 32])
    between = (grey > min(fg, bg) + 10) & (grey < max(fg, bg) - 10)
    assert between.sum() > 20  # a ring of partial-coverage pixels around the disc


def test_size_concept_changes_object_area():
    areas = [render(_scene(size=s), 64, np.random.default_rng(0)).masks.sum() for s in ("small", "medium", "large")]
    assert areas[0] < areas[1] < areas[2]


@pytest.mark.parametrize("position", ["left", "right", "top", "bottom"])
def test_position_moves_the_single_object(position):
    mask = render(_scene(position=position), 64, np.random.default_rng(0)).masks[0]
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() / 64, ys.mean() / 64
    expected = {"left": cx < 0.35, "right": cx > 0.65, "top": cy < 0.35, "bottom": cy > 0.65}
    assert expected[position]


def test_same_rng_same_bytes_and_other_rng_other_image():
    scene = sample_scene(np.random.default_rng(5), fixed={"background": "grass"})
    a = render(scene, 64, np.random.default_rng(9)).image
    b = render(scene, 64, np.random.default_rng(9)).image
    c = render(scene, 64, np.random.default_rng(10)).image
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_value_of_a_family_changes_the_image(family):
    base = _scene(count="count_one", position="centre", pattern="striped")
    images = set()
    for value in FAMILY_MEMBERS[family]:
        scene = _scene(**{**{f: base.value(f) for f in FAMILIES}, family: value})
        images.add(render(scene, 64, np.random.default_rng(2)).image.tobytes())
    assert len(images) == len(FAMILY_MEMBERS[family])


def test_extras_only_touch_their_own_pixels():
    plain = render(_scene(), 64, np.random.default_rng(4)).image.astype(int)
    framed = render(_scene(extras=frozenset({"frame"})), 64, np.random.default_rng(4)).image.astype(int)
    sunny = render(_scene(extras=frozenset({"sun"})), 64, np.random.default_rng(4)).image.astype(int)
    shadowed = render(_scene(extras=frozenset({"shadow"})), 64, np.random.default_rng(4))
    changed = np.abs(framed - plain).sum(axis=2) > 0
    assert changed.any() and (grid(64).edge_px[changed] < 6).all()
    changed = np.abs(sunny - plain).sum(axis=2) > 0
    assert changed.any() and not changed[24:].any()  # the sun sits in a top corner
    darker = shadowed.image.astype(int).sum(axis=2) < plain.sum(axis=2) - 20
    interior = binary_erosion(shadowed.masks[0], iterations=2)
    assert darker.any() and not (darker & interior).any()  # the shadow falls behind the object


def test_bad_size_is_a_config_error():
    with pytest.raises(ConfigError, match="size"):
        render(_scene(), 4)
    with pytest.raises(ConfigError, match="size"):
        render(_scene(), "64")


def test_a_blade_of_grass_that_wraps_past_the_right_edge_is_drawn_not_an_index_error():
    # rng seed 3651 at 64 px puts a blade's x at a float32 just below 0, which ``% 1.0`` makes exactly 1.0: one bin
    # past the last (world seed 808 of ``eval world --random-plants`` stopped there)
    assert wrapped_bins(np.array([-1e-9, 0.0, 0.5, 0.999999, 1.0], dtype=np.float32), 70).tolist() == [69, 0, 35, 69, 0]
    image = paint_background("grass", np.random.default_rng(3651), 64)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and 0.0 <= image.min() <= image.max() <= 1.0
