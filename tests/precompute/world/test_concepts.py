"""The concept catalogue, its Boltzmann prior and scene sampling."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest

from precompute.errors import ConfigError
from precompute.world import (
    CONCEPTS,
    EXTRAS,
    FAMILIES,
    FAMILY_MEMBERS,
    Prior,
    Scene,
    marginal_frequencies,
    sample_scene,
)
from precompute.world.truth import concept_frequencies


def test_catalogue_has_at_least_40_unique_identifier_names():
    names = [c.name for c in CONCEPTS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z_]*", n) for n in names)
    assert {c.family for c in CONCEPTS} == set(FAMILIES) | {"extras"}
    assert len(FAMILY_MEMBERS["shape"]) >= 10 and set(EXTRAS) == {"shadow", "frame", "sun"}


def test_marginal_frequencies_span_rare_to_common_and_sum_per_family():
    freq = marginal_frequencies()
    assert min(freq.values()) < 0.02 and max(freq.values()) > 0.55
    assert all(0 < p < 1 for p in freq.values())
    for family in FAMILIES:
        total = sum(freq[n] for n in FAMILY_MEMBERS[family])
        expected = freq["count_one"] if family == "position" else 1.0
        assert total == pytest.approx(expected)


def test_empirical_frequencies_match_the_exact_marginals():
    rng = np.random.default_rng(7)
    n = 4000
    measured = concept_frequencies(sample_scene(rng) for _ in range(n))
    for name, p in marginal_frequencies().items():
        assert abs(measured[name] - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.005, name


def test_prior_override_changes_frequencies_and_validates():
    prior = Prior.default().override({"sun": 0.0, "star": -5.0})
    freq = marginal_frequencies(prior)
    assert freq["sun"] == pytest.approx(0.5)
    assert freq["star"] > 0.9
    with pytest.raises(ConfigError, match="stra"):
        Prior.default().override({"stra": 1.0})
    with pytest.raises(ConfigError, match="finite"):
        Prior.default().override({"sun": float("nan")})
    assert pickle.loads(pickle.dumps(prior)) == prior


def test_fixed_families_are_kept_and_position_implies_one_object():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = sample_scene(rng, fixed={"shape": "star", "position": "left", "extras": ("sun",)})
        assert (scene.shape, scene.count, scene.position) == ("star", "count_one", "left")
        assert "sun" in scene.extras
    scene = sample_scene(rng, fixed={"count": "count_three", "position": "left"})
    assert scene.position is None and scene.n_objects == 3
    with pytest.raises(ConfigError, match="shape"):
        sample_scene(rng, fixed={"shape": "blue"})
    with pytest.raises(ConfigError, match="families"):
        sample_scene(rng, fixed={"hue": "blue"})


def test_fixing_a_family_leaves_the_other_draws_alone():
    free = sample_scene(np.random.default_rng(3))
    fixed = sample_scene(np.random.default_rng(3), fixed={"colour": "pink"})
    assert (fixed.shape, fixed.background, fixed.extras) == (free.shape, free.background, free.extras)


def test_scene_validates_and_lists_its_concepts():
    scene = Scene("star", "red", "solid", "count_two", "large", None, "wood", frozenset({"shadow"}))
    assert scene.concepts() == ("star", "red", "solid", "count_two", "large", "wood", "shadow")
    with pytest.raises(ConfigError, match="position"):
        Scene("star", "red", "solid", "count_two", "large", "left", "wood")
    with pytest.raises(ConfigError, match="colour"):
        Scene("star", "crimson", "solid", "count_one", "large", "left", "wood")
