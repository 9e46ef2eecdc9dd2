"""The world as a data source: reproducible items, ids, config checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from precompute.errors import ConfigError
from precompute.world import Prior, World


def test_same_seed_gives_the_same_bytes_and_other_seeds_differ():
    a, b, c = World(seed=1).sample(3), World(seed=1).sample(3), World(seed=2).sample(3)
    assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption and a.scene == b.scene
    assert a.image.tobytes() != c.image.tobytes()


def test_an_item_does_not_depend_on_what_was_sampled_before():
    world = World(seed=4)
    in_order = world.sample_many(0, 6)
    reversed_ = [World(seed=4).sample(i) for i in reversed(range(6))][::-1]
    for x, y in zip(in_order, reversed_):
        assert x.item_id == y.item_id and x.image.tobytes() == y.image.tobytes() and x.caption == y.caption


def test_sample_fields_and_annotations():
    world = World(seed=0, size=32)
    sample = world.sample(42)
    assert sample.item_id == "w0-000042"
    assert sample.image.shape == (32, 32, 3) and sample.masks.shape[0] == sample.scene.n_objects
    assert sample.annotations == sample.scene.concepts()
    assert world.scene(42) == sample.scene
    item = sample.to_item()
    assert isinstance(item.image, Image.Image) and item.annotations == sample.annotations


def test_caption_noise_does_not_move_the_scene():
    assert World(seed=5, noise=0.0).sample(7).scene == World(seed=5, noise=0.5).sample(7).scene


def test_prior_override_reaches_the_scenes():
    world = World(seed=0, prior=Prior.default().override({"sun": -6.0}))
    assert sum("sun" in world.scene(i).extras for i in range(100)) > 95


@pytest.mark.parametrize(
    "kwargs, word",
    [({"seed": -1}, "seed"), ({"size": 3}, "size"), ({"noise": 2.0}, "noise"), ({"prior": {"sun": 1}}, "Prior")],
)
def test_bad_world_config_is_a_config_error(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        World(**kwargs)


def test_bad_index_is_a_config_error():
    with pytest.raises(ConfigError, match="index"):
        World().sample(-1)
    assert isinstance(World().sample(np.int64(2)).caption, str)
