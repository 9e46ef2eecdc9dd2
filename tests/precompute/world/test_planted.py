"""The planted generator: reads only the caption, applies its effects, knows the true change."""

from __future__ import annotations

import numpy as np
import pytest

from precompute.errors import ConfigError
from precompute.world import (
    FAMILIES,
    PlantedEffect,
    PlantedGenerator,
    World,
    compose_caption,
    concept_frequencies,
    parse_caption,
    sample_scene,
    true_change,
)
from precompute.world.planted import item_rng


def _star_captions(n: int) -> list[str]:
    """Noise-free captions of scenes that all hold stars."""
    rng = np.random.default_rng(11)
    return [compose_caption(sample_scene(rng, fixed={"shape": "star"}), rng, noise=0.0).text for _ in range(n)]


def test_generator_reads_only_the_caption():
    world = World(seed=2)
    generator = PlantedGenerator(seed=0)
    for index in range(150):
        caption = world.caption(index)
        stated = parse_caption(caption)
        a = generator.scene_for(caption, f"a{index}")
        b = generator.generate(caption, f"b{index}").scene
        for family in FAMILIES:
            if family in stated and not (family == "position" and a.count != "count_one"):
                assert a.value(family) == b.value(family) == stated[family], (caption, family)
        assert set(stated.get("extras", ())) <= a.extras & b.extras


def test_generation_is_deterministic_given_seed_and_item_id():
    generator = PlantedGenerator(effects=[PlantedEffect("suppress", "star", 0.5)], seed=3)
    a = generator.generate("two red stars", "x1")
    b = PlantedGenerator(effects=[PlantedEffect("suppress", "star", 0.5)], seed=3).generate("two red stars", "x1")
    assert a.image.tobytes() == b.image.tobytes() and a.scene == b.scene
    assert generator.generate("two red stars", "x2").image.tobytes() != a.image.tobytes()
    # blake2b, not Python's salted hash(): the same stream in every process and every run
    assert item_rng(0, "w0-000001").entropy == 316164709247484415959843651845303784416


def test_suppress_drops_a_captioned_concept_to_about_one_minus_the_rate():
    captions = _star_captions(600)
    generator = PlantedGenerator(effects=[PlantedEffect("suppress", "star", 0.9)])
    drawn = [generator.scene_for(c, f"s{i}") for i, c in enumerate(captions)]
    share = np.mean([s.shape == "star" for s in drawn])
    assert 0.06 < share < 0.14
    assert len({s.shape for s in drawn}) >= 6  # the replacements are drawn from the prior over other shapes


def test_suppress_with_replacement_and_suppress_an_extra():
    generator = PlantedGenerator(effects=[PlantedEffect("suppress", "star", 1.0, replace_with="circle"),
                                          PlantedEffect("suppress", "sun", 1.0)])
    for i, caption in enumerate(_star_captions(40)):
        scene = generator.generate(caption + ", with the sun in the corner", f"r{i}").scene
        assert scene.shape == "circle" and "sun" not in scene.extras


def test_suppressing_one_object_keeps_position_consistent():
    generator = PlantedGenerator(effects=[PlantedEffect("suppress", "count_one", 1.0, replace_with="count_three")])
    scene = generator.generate("a red star on the left", "p0").scene
    assert scene.count == "count_three" and scene.position is None


def test_add_raises_an_uncaptioned_extra_to_at_least_the_rate():
    world = World(seed=6)
    captions = [world.caption(i) for i in range(500)]
    generator = PlantedGenerator(effects=[PlantedEffect("add", "shadow", 0.6)])
    drawn = [generator.scene_for(c, f"h{i}") for i, c in enumerate(captions)]
    share = np.mean(["shadow" in s.extras for s in drawn])
    expected = 0.6 + 0.4 * 0.25  # added 60% of the time on top of the prior's 25%
    assert share > 0.6 and abs(share - expected) < 0.07


def test_add_a_categorical_value_only_where_the_caption_is_silent():
    generator = PlantedGenerator(effects=[PlantedEffect("add", "wood", 1.0)])
    assert generator.generate("three red stars", "c0").scene.background == "wood"
    assert generator.generate("three red stars on green grass", "c1").scene.background == "grass"


def test_true_change_is_the_difference_of_frequencies():
    world = World(seed=8)
    real = [world.scene(i) for i in range(300)]
    generator = PlantedGenerator(effects=[PlantedEffect("suppress", "circle", 1.0), PlantedEffect("add", "frame", 1.0)])
    gen = [generator.scene_for(world.caption(i), world.item_id(i)) for i in range(300)]
    change = true_change(real, gen)
    real_freq, gen_freq = concept_frequencies(real), concept_frequencies(gen)
    assert change["circle"] == pytest.approx(-real_freq["circle"])
    assert change["frame"] == pytest.approx(1.0 - real_freq["frame"])
    assert all(change[k] == pytest.approx(gen_freq[k] - real_freq[k]) for k in change)


@pytest.mark.parametrize(
    "args, message",
    [
        (("suppress", "stra", 0.5), "'stra'.*did you mean 'star'"),
        (("suppress", "star", 1.5), "rate of suppress 'star'"),
        (("suppress", "star", float("nan")), "rate"),
        (("add", "shadow", True), "rate"),
        (("boost", "star", 0.5), "suppress"),
        (("suppress", "star", 0.5, "red"), "same family as 'star'"),
        (("suppress", "star", 0.5, "star"), "differ"),
        (("add", "star", 0.5, "circle"), "replace_with only goes with 'suppress'"),
        (("suppress", "shadow", 0.5, "sun"), "removed"),
        (("suppress", "star", 0.5, "cirle"), "'cirle'"),
    ],
)
def test_bad_effects_are_config_errors_naming_the_concept(args, message):
    with pytest.raises(ConfigError, match=message):
        PlantedEffect(*args)


def test_effects_from_config_tables():
    generator = PlantedGenerator(effects=[{"effect": "add", "concept": "sun", "rate": 0.3}], seed=1)
    assert generator.config()["effects"] == [{"effect": "add", "concept": "sun", "rate": 0.3, "replace_with": None}]
    with pytest.raises(ConfigError, match="unknown.*strength"):
        PlantedEffect.from_dict({"effect": "add", "concept": "sun", "rate": 0.3, "strength": 2})
    with pytest.raises(ConfigError, match="item_id"):
        generator.generate("a star", "")


def _frequencies(scenes) -> dict[str, float]:
    from collections import Counter

    counts = Counter(name for scene in scenes for name in scene.concepts())
    return {name: counts[name] / len(scenes) for name in counts}


def test_a_generator_without_effects_draws_the_datas_distribution_and_a_prior_filling_one_does_not():
    """The null control of every atlas: for the data's own captions, a generator without effects draws scenes whose
    concept frequencies match the data's (each within 4 standard errors); one that fills a caption's silences from
    the plain prior (the control) over-draws unmentioned extras and draws single objects where none are."""
    from precompute.world import World
    from precompute.world.planted import PlantedGenerator

    world, n = World(seed=5, noise=0.1), 20_000
    captions = [world.caption(i) for i in range(n)]
    ids = [world.item_id(i) for i in range(n)]
    real = _frequencies([world.scene(i) for i in range(n)])
    null = PlantedGenerator(seed=6, caption_noise=0.1)
    drawn = _frequencies([null.scene_for(c, i) for c, i in zip(captions, ids)])

    def worst(freq):
        return max(abs(freq.get(k, 0) - p) / np.sqrt(max(p * (1 - p), 1e-4) * 2 / n) for k, p in real.items())

    assert worst(drawn) < 4.0
    naive = PlantedGenerator(seed=6)
    naive.silent = naive.prior  # fills silences from the prior and reads captions as noiseless
    assert worst(_frequencies([naive.scene_for(c, i) for c, i in zip(captions, ids)])) > 6.0
