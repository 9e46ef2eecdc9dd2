"""Caption grammar and its parser: round trip, noise, omissions, hand-written captions."""

from __future__ import annotations

import numpy as np
import pytest

from precompute.errors import ConfigError
from precompute.world import FAMILIES, compose_caption, make_caption, parse_caption, sample_scene
from precompute.world.captions import MENTION, lexicon


def _captions(n: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        scene = sample_scene(rng)
        yield scene, compose_caption(scene, rng, noise)


def test_lexicon_has_no_phrase_with_two_meanings():
    assert len(lexicon()) > 150


def test_parse_recovers_every_stated_family_without_noise():
    for scene, caption in _captions(2000, noise=0.0):
        assert parse_caption(caption.text) == caption.stated, caption.text
        assert caption.stated["shape"] == scene.shape
        assert all(caption.stated[f] == scene.value(f) for f in FAMILIES if f in caption.stated)
        assert set(caption.stated.get("extras", ())) <= scene.extras


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_noise_rate_is_about_as_configured(noise):
    wrong = total = 0
    for scene, caption in _captions(2500, noise=noise, seed=1):
        for family in FAMILIES:
            if family in caption.stated:
                total += 1
                wrong += caption.stated[family] != scene.value(family)
        assert parse_caption(caption.text) == caption.stated
    assert abs(wrong / total - noise) < max(0.01, 0.15 * noise)


def test_families_are_omitted_at_their_rates():
    counts = dict.fromkeys(FAMILIES, 0)
    n = n_multi = 2000
    for scene, caption in _captions(n, noise=0.0, seed=2):
        for family in ("colour", "pattern", "background", "size"):
            counts[family] += family in caption.stated
        counts["count"] += "count" in caption.stated and scene.count != "count_one"
        n_multi -= scene.count == "count_one"
    for family in ("colour", "pattern", "background", "size"):
        assert abs(counts[family] / n - MENTION[family]) < 0.045, family
    assert abs(counts["count"] / n_multi - MENTION["count"]) < 0.045


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a photo of three red stars on a wooden background", {"shape": "star", "colour": "red", "count": "count_three",
                                                              "background": "wood"}),
        ("a photo of 3 red stars on a wooden table", {"shape": "star", "colour": "red", "count": "count_three",
                                                      "background": "wood"}),
        ("Two striped blue hearts, grass behind them", {"shape": "heart", "colour": "blue", "pattern": "striped",
                                                       "count": "count_two", "background": "grass"}),
        ("a white star on a white background", {"shape": "star", "colour": "white", "count": "count_one",
                                                "background": "plain_white"}),
        ("a blue crescent moon at the top under a blue sky, casting a shadow",
         {"shape": "crescent", "colour": "blue", "count": "count_one", "position": "top", "background": "sky",
          "extras": ("shadow",)}),
        ("Several tiny polka-dot donuts, framed, with the sun in the corner",
         {"shape": "ring", "pattern": "dotted", "size": "small", "extras": ("frame", "sun")}),
    ],
)
def test_parse_reads_hand_written_captions(text, expected):
    assert parse_caption(text) == expected


def test_captions_are_deterministic_and_validated():
    scene = sample_scene(np.random.default_rng(0))
    assert make_caption(scene, np.random.default_rng(1)) == make_caption(scene, np.random.default_rng(1))
    with pytest.raises(ConfigError, match="noise"):
        make_caption(scene, np.random.default_rng(1), noise=1.5)
    with pytest.raises(ConfigError, match="string"):
        parse_caption(None)
