"""The world's latent concepts, their Boltzmann prior, and scenes sampled from it.

This is Definition 1 of the blindspots paper made literal: an image is produced by a
set of independent latent concepts, each with an energy. Categorical families (one
shape, one colour, ... per scene) are drawn with ``p(c) ∝ exp(-E_c)`` inside the
family; each extra (shadow, frame, sun) is an independent binary concept present with
``p = sigmoid(-E)``. Because the prior is explicit, every concept's frequency is known
exactly (``marginal_frequencies``), which is what lets the atlas be scored against
the truth.

One family depends on another by construction: ``position`` only exists for a scene
with a single object (``count_one``); with two to four objects the layout fills the
canvas and ``Scene.position`` is ``None``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

import numpy as np

from precompute.errors import ConfigError


@dataclass(frozen=True)
class Concept:
    """One latent concept: a unique lowercase ``name``, its ``family`` and default ``energy``."""

    name: str
    family: str
    energy: float


# Categorical families in the order a scene lists them; ``extras`` are independent binaries.
FAMILIES: tuple[str, ...] = ("shape", "colour", "pattern", "count", "size", "position", "background")
EXTRAS_FAMILY = "extras"

# (name, energy). Categorical energies are -ln(target share within the family), rounded;
# extras are ln((1 - p) / p) so that sigmoid(-E) = p. Rare on purpose: crescent, document
# (about 1-2%), count_four (5%); common: solid (60%), count_one (50%).
_CATALOGUE: dict[str, tuple[tuple[str, float], ...]] = {
    "shape": (
        ("circle", 1.61), ("square", 1.83), ("triangle", 2.04), ("star", 2.30), ("heart", 2.41),
        ("hexagon", 2.53), ("cross", 2.66), ("crescent", 3.91), ("diamond", 2.53), ("ring", 2.66),
    ),
    "colour": (
        ("red", 1.71), ("orange", 2.66), ("yellow", 2.21), ("green", 2.04), ("blue", 1.77),
        ("purple", 2.81), ("pink", 3.00), ("white", 2.30), ("black", 2.41), ("brown", 3.22),
    ),
    "pattern": (("solid", 0.51), ("striped", 1.61), ("dotted", 1.97), ("checkered", 2.81)),
    # count_four at about 5%: rare, and still seen often enough in 2,000 pairs for its suppression to be measured
    "count": (("count_one", 0.65), ("count_two", 1.27), ("count_three", 1.71), ("count_four", 2.96)),
    "size": (("small", 1.20), ("medium", 0.80), ("large", 1.39)),
    "position": (("centre", 0.80), ("left", 1.90), ("right", 1.90), ("top", 2.04), ("bottom", 2.12)),
    "background": (
        ("plain_white", 1.20), ("plain_dark", 2.53), ("gradient", 1.97), ("checkerboard_bg", 2.66),
        ("wood", 2.12), ("grass", 2.12), ("document", 4.42), ("sky", 2.41), ("bricks", 2.73),
    ),
    EXTRAS_FAMILY: (("shadow", 1.10), ("frame", 1.99), ("sun", 2.44)),
}

CONCEPTS: tuple[Concept, ...] = tuple(
    Concept(name, family, energy) for family, members in _CATALOGUE.items() for name, energy in members
)
CONCEPT_BY_NAME: Mapping[str, Concept] = MappingProxyType({c.name: c for c in CONCEPTS})
CONCEPT_INDEX: Mapping[str, int] = MappingProxyType({c.name: i for i, c in enumerate(CONCEPTS)})
FAMILY_MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {family: tuple(name for name, _ in members) for family, members in _CATALOGUE.items()}
)
EXTRAS: tuple[str, ...] = FAMILY_MEMBERS[EXTRAS_FAMILY]


def concept(name: str) -> Concept:
    """The catalogue entry called ``name``; ``ConfigError`` with close matches otherwise."""
    found = CONCEPT_BY_NAME.get(name)
    if found is None:
        raise ConfigError(unknown_concept_message(name))
    return found


def unknown_concept_message(name: object) -> str:
    """Say that ``name`` is not a world concept and suggest the closest names."""
    close = difflib.get_close_matches(str(name), list(CONCEPT_BY_NAME), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown world concept {name!r}{hint} (expected one of the {len(CONCEPTS)} catalogue names)"


@dataclass(frozen=True)
class Prior:
    """Energies of every concept; the world's own by default, overridable per concept.

    A generator may carry a prior of its own (what it fills in when a caption is
    silent). ``Prior.default().override({"sun": 0.0})`` makes the sun a coin flip.
    """

    energies: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({c.name: c.energy for c in CONCEPTS})
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.energies if name not in CONCEPT_BY_NAME]
        if unknown:
            raise ConfigError(unknown_concept_message(unknown[0]))
        missing = [c.name for c in CONCEPTS if c.name not in self.energies]
        if missing:
            raise ConfigError(f"prior lacks energies for {missing}; build it with Prior.default().override(...)")
        bad = {name: e for name, e in self.energies.items() if not _is_finite_number(e)}
        if bad:
            raise ConfigError(f"prior energies must be finite numbers, got {bad}")
        frozen = MappingProxyType({c.name: float(self.energies[c.name]) for c in CONCEPTS})
        object.__setattr__(self, "energies", frozen)
        object.__setattr__(self, "_tables", _sampling_tables(frozen))

    @classmethod
    def default(cls) -> Prior:
        """The world's prior (the catalogue energies); one shared immutable instance."""
        return _default_prior()

    def override(self, energies: Mapping[str, float]) -> Prior:
        """A copy with the given concepts' energies replaced."""
        for name in energies:
            concept(name)
        return Prior({**self.energies, **energies})

    def family_probabilities(self, family: str) -> np.ndarray:
        """Softmax of ``-energy`` over a categorical family, in catalogue order."""
        if family not in FAMILIES:
            raise ConfigError(f"expected a categorical family {FAMILIES}, got {family!r}")
        return self._tables.probs[family]

    def extra_probability(self, name: str) -> float:
        """Probability that the binary extra ``name`` is present: sigmoid(-E)."""
        if name not in EXTRAS:
            raise ConfigError(f"expected an extra {EXTRAS}, got {name!r}")
        return float(1.0 / (1.0 + np.exp(self.energies[name])))

    def __hash__(self) -> int:
        return hash(tuple(self.energies.values()))

    def __reduce__(self):
        # MappingProxyType does not pickle; worker processes get a plain dict back
        return (Prior, (dict(self.energies),))

    def to_dict(self) -> dict[str, float]:
        """Plain ``{concept: energy}`` for saving next to the outputs."""
        return dict(self.energies)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)


@lru_cache(maxsize=1)
def _default_prior() -> Prior:
    return Prior()


@dataclass(frozen=True)
class _Tables:
    probs: dict[str, np.ndarray]
    cdf: np.ndarray  # (n_families, max_members): cumulative probabilities, padded with 1
    extra_p: np.ndarray  # (n_extras,)


def _sampling_tables(energies: Mapping[str, float]) -> _Tables:
    probs = {}
    width = max(len(FAMILY_MEMBERS[f]) for f in FAMILIES)
    cdf = np.ones((len(FAMILIES), width))
    for row, family in enumerate(FAMILIES):
        e = np.array([energies[n] for n in FAMILY_MEMBERS[family]])
        p = np.exp(-(e - e.min()))
        p /= p.sum()
        p.setflags(write=False)
        probs[family] = p
        cdf[row, : len(p)] = np.cumsum(p)
    for row, family in enumerate(FAMILIES):
        # guard against rounding leaving the last member unreachable
        cdf[row, len(FAMILY_MEMBERS[family]) - 1 :] = 1.0
    extra_p = 1.0 / (1.0 + np.exp(np.array([energies[n] for n in EXTRAS])))
    return _Tables(probs, cdf, extra_p)


def marginal_frequencies(prior: Prior | None = None) -> dict[str, float]:
    """Exact probability that each concept is present in a scene drawn from ``prior``.

    Position concepts are scaled by ``p(count_one)`` since only single-object scenes
    have a position.
    """
    prior = prior or Prior.default()
    freq: dict[str, float] = {}
    for family in FAMILIES:
        for name, p in zip(FAMILY_MEMBERS[family], prior.family_probabilities(family)):
            freq[name] = float(p)
    p_one = freq["count_one"]
    for name in FAMILY_MEMBERS["position"]:
        freq[name] *= p_one
    for name in EXTRAS:
        freq[name] = prior.extra_probability(name)
    return {c.name: freq[c.name] for c in CONCEPTS}


@dataclass(frozen=True)
class Scene:
    """One value per categorical family plus the set of extras present.

    ``position`` is ``None`` exactly when ``count`` is not ``count_one``.
    """

    shape: str
    colour: str
    pattern: str
    count: str
    size: str
    position: str | None
    background: str
    extras: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for family in FAMILIES:
            value = getattr(self, family)
            if family == "position" and value is None and self.count != "count_one":
                continue
            if value not in FAMILY_MEMBERS[family]:
                raise ConfigError(f"scene {family} must be one of {FAMILY_MEMBERS[family]}, got {value!r}")
        if self.position is not None and self.count != "count_one":
            raise ConfigError(f"only single-object scenes have a position; got {self.position!r} with {self.count}")
        extras = frozenset(self.extras)
        if not extras <= set(EXTRAS):
            raise ConfigError(f"scene extras must be among {EXTRAS}, got {sorted(extras)}")
        object.__setattr__(self, "extras", extras)

    @property
    def n_objects(self) -> int:
        """How many objects the scene draws (1-4)."""
        return FAMILY_MEMBERS["count"].index(self.count) + 1

    def concepts(self) -> tuple[str, ...]:
        """Names of the concepts present, in catalogue order."""
        present = {getattr(self, f) for f in FAMILIES} | self.extras
        return tuple(c.name for c in CONCEPTS if c.name in present)

    def value(self, family: str) -> str | None:
        """The scene's value for a categorical family."""
        return getattr(self, family)


def _check_fixed(fixed: Mapping[str, object]) -> None:
    for key, value in fixed.items():
        if key == EXTRAS_FAMILY:
            wrong = [v for v in value if v not in EXTRAS]  # type: ignore[union-attr]
            if wrong:
                raise ConfigError(f"fixed extras must be among {EXTRAS}, got {wrong}")
        elif key in FAMILIES:
            if value not in FAMILY_MEMBERS[key]:
                raise ConfigError(f"fixed {key} must be one of {FAMILY_MEMBERS[key]}, got {value!r}")
        else:
            raise ConfigError(f"fixed keys must be families {FAMILIES + (EXTRAS_FAMILY,)}, got {key!r}")


def sample_scene(
    rng: np.random.Generator, prior: Prior | None = None, fixed: Mapping[str, object] | None = None
) -> Scene:
    """Draw a scene from ``prior``, keeping the families given in ``fixed``.

    ``fixed`` maps a family to a concept name (``{"shape": "star"}``) and
    ``"extras"`` to the extras forced present; the other extras are drawn. A fixed
    ``position`` implies a single object unless ``count`` is fixed to more, in which
    case the position is dropped (a caption may say "two stars on the left"). The
    same number of random draws is made whatever is fixed, so fixing one family
    leaves the others' draws unchanged.
    """
    prior = prior or Prior.default()
    fixed = dict(fixed or {})
    _check_fixed(fixed)
    tables = prior._tables
    u = rng.random(len(FAMILIES) + len(EXTRAS))
    picks = (u[: len(FAMILIES), None] > tables.cdf).sum(axis=1)
    values = {f: FAMILY_MEMBERS[f][i] for f, i in zip(FAMILIES, picks)}
    if "position" in fixed and "count" not in fixed:
        values["count"] = "count_one"
    values.update({k: v for k, v in fixed.items() if k in FAMILIES})
    if values["count"] != "count_one":
        values["position"] = None
    extras = {name for name, draw, p in zip(EXTRAS, u[len(FAMILIES) :], tables.extra_p) if draw < p}
    extras |= set(fixed.get(EXTRAS_FAMILY, ()))
    return Scene(**values, extras=frozenset(extras))


def with_value(scene: Scene, family: str, name: str | None, rng: np.random.Generator, prior: Prior) -> Scene:
    """``scene`` with one family changed, keeping ``position`` consistent with ``count``.

    Moving to a single object draws a position from ``prior``; moving away drops it.
    """
    values = {f: getattr(scene, f) for f in FAMILIES}
    values[family] = name
    if values["count"] != "count_one":
        values["position"] = None
    elif values["position"] is None:
        values["position"] = draw_from_family(rng, prior, "position")
    return Scene(**values, extras=scene.extras)


def draw_from_family(
    rng: np.random.Generator, prior: Prior, family: str, exclude: Iterable[str] = ()
) -> str:
    """One value of a categorical family from ``prior``, renormalised without ``exclude``."""
    members = FAMILY_MEMBERS[family]
    p = prior.family_probabilities(family).copy()
    p[[members.index(n) for n in exclude]] = 0.0
    if p.sum() <= 0:
        raise ConfigError(f"nothing left to draw in family {family!r} after excluding {list(exclude)}")
    return members[int(rng.choice(len(members), p=p / p.sum()))]
