"""A text-to-image "model" with blindspots we planted, so the detector's answer is known.

``PlantedGenerator`` behaves like a real T2I model in the one way that matters: it
sees only the caption. It parses what the caption states and draws the scene a
perfectly trained model would draw for it: everything else from the data's posterior
given the caption (``silent_prior``, ``caption_posterior``), then applies its planted effects. So a
generator without effects draws exactly the data's distribution (the null control of
an atlas), and every difference a planted one shows comes from its effects:

- ``suppress X`` at rate r: when X is in the scene (stated or not), with
  probability r it is replaced by ``replace_with`` or, without one, by a draw from
  the prior over X's family without X. A suppressed extra is removed.
- ``add Z`` at rate r: when the caption leaves Z's family open (for an extra: does
  not mention Z), with probability r the scene gets Z. Adding a position only acts
  on single-object scenes (other scenes have no position).

Effects apply in the order given. Every output carries the scene actually drawn,
so the true per-concept frequency change is exact (see ``truth.true_change``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from precompute.errors import ConfigError
from precompute.world.captions import MENTION, parse_caption
from precompute.world.concepts import (
    EXTRAS,
    EXTRAS_FAMILY,
    FAMILIES,
    FAMILY_MEMBERS,
    Prior,
    Scene,
    concept,
    draw_from_family,
    sample_scene,
    with_value,
)
from precompute.world.render import check_size, render
from precompute.world.world import WorldSample, check_seed

EFFECTS = ("suppress", "add")


@dataclass(frozen=True)
class PlantedEffect:
    """One planted blindspot: ``effect`` ("suppress" | "add") of ``concept`` at ``rate``.

    ``replace_with`` (suppress only, categorical families only) names the concept of
    the same family drawn instead; ``None`` draws it from the generator's prior.
    """

    effect: str
    concept: str
    rate: float
    replace_with: str | None = None

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise ConfigError(f"planted effect must be one of {EFFECTS}, got {self.effect!r}")
        target = concept(self.concept)  # ConfigError naming close matches if unknown
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
            raise ConfigError(f"rate of {self.effect} {self.concept!r} must be a number in [0, 1], got {rate!r}")
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"rate of {self.effect} {self.concept!r} must be in [0, 1], got {rate!r}")
        object.__setattr__(self, "rate", float(rate))
        if self.replace_with is None:
            return
        if self.effect != "suppress":
            raise ConfigError(f"replace_with only goes with 'suppress'; got it on {self.effect} {self.concept!r}")
        if target.family == EXTRAS_FAMILY:
            raise ConfigError(f"a suppressed extra ({self.concept!r}) is removed; replace_with must be None")
        replacement = concept(self.replace_with)
        if replacement.family != target.family:
            raise ConfigError(
                f"replace_with must be in the same family as {self.concept!r} ({target.family}), "
                f"got {self.replace_with!r} from {replacement.family}"
            )
        if replacement.name == target.name:
            raise ConfigError(f"replace_with must differ from the suppressed concept, got {self.concept!r} twice")

    @property
    def family(self) -> str:
        """The family of the affected concept."""
        return concept(self.concept).family

    def apply(self, scene: Scene, stated: Mapping[str, object], rng: np.random.Generator, prior: Prior) -> Scene:
        """The scene after this effect; ``stated`` is what the caption said (``parse_caption``)."""
        hit = rng.random() < self.rate  # drawn every time so effects keep independent streams
        family = self.family
        if self.effect == "suppress":
            if family == EXTRAS_FAMILY:
                return replace(scene, extras=scene.extras - {self.concept}) if hit else scene
            if not hit or scene.value(family) != self.concept:
                return scene
            new = self.replace_with or draw_from_family(rng, prior, family, exclude=[self.concept])
            return with_value(scene, family, new, rng, prior)
        if family == EXTRAS_FAMILY:
            mentioned = self.concept in stated.get(EXTRAS_FAMILY, ())
            return replace(scene, extras=scene.extras | {self.concept}) if hit and not mentioned else scene
        if not hit or family in stated or (family == "position" and scene.count != "count_one"):
            return scene
        return with_value(scene, family, self.concept, rng, prior)

    def to_dict(self) -> dict:
        """Plain form for configs and the atlas."""
        return {"effect": self.effect, "concept": self.concept, "rate": self.rate, "replace_with": self.replace_with}

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> PlantedEffect:
        """Build from a config table; unknown keys are a ``ConfigError``."""
        allowed = {"effect", "concept", "rate", "replace_with"}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"a planted effect must be a table with keys {sorted(allowed)}, got {raw!r}")
        extra = set(raw) - allowed
        missing = {"effect", "concept", "rate"} - set(raw)
        if extra or missing:
            raise ConfigError(
                f"planted effect keys must be {sorted(allowed)}; unknown {sorted(extra)}, missing {sorted(missing)}"
            )
        return cls(**raw)  # type: ignore[arg-type]


UNSAID = 50.0  # the energy of a value a silent caption rules out (probability e^-50)


def silent_prior(prior: Prior) -> Prior:
    """What the data holds where a caption is silent, under ``prior`` and the caption grammar.

    ``precompute.world.captions`` mentions a present extra with probability m, so an
    extra the caption does not mention is present with p (1 - m) / (1 - p m), not p; and
    it always states a single object, so an unstated count is never one. (Categorical
    families are mentioned at a rate that does not depend on their value: silence about
    them says nothing, and their prior stands.)
    """
    energies = {}
    for name in EXTRAS:
        p, m = prior.extra_probability(name), MENTION[name]
        silent = p * (1 - m) / (1 - p * m)
        energies[name] = math.log((1 - silent) / silent)
    energies["count_one"] = UNSAID
    return prior.override(energies)


def statement_posteriors(prior: Prior, noise: float) -> dict[tuple[str, str], np.ndarray]:
    """Per (family, stated value): the probabilities of the true value behind that statement, in family order.

    A caption swaps a mentioned value for a uniformly drawn wrong one of its family at
    rate ``noise``; so the true value behind a statement s is v with probability
    proportional to P(v) P(v said) (1 - noise if v = s else noise / (n - 1)). Empty
    without noise (a statement is then the truth); extras are never swapped.
    """
    if noise <= 0:
        return {}
    tables = {}
    for family in FAMILIES:
        members = FAMILY_MEMBERS[family]
        mention = np.array([1.0 if family == "count" and m == "count_one" else MENTION[family] for m in members])
        weighted = prior.family_probabilities(family) * mention
        for i, said in enumerate(members):
            likelihood = np.full(len(members), noise / (len(members) - 1))
            likelihood[i] = 1.0 - noise
            tables[family, said] = weighted * likelihood / (weighted * likelihood).sum()
    return tables


def caption_posterior(stated: Mapping[str, object], posteriors: Mapping[tuple[str, str], np.ndarray],
                      rng: np.random.Generator) -> dict[str, object]:
    """The caption's stated values, each replaced by a draw of the true value behind the statement
    (``statement_posteriors``); extras stay as stated."""
    if not posteriors:
        return dict(stated)
    out = dict(stated)
    for family, said in stated.items():
        if family != EXTRAS_FAMILY and said is not None:
            members = FAMILY_MEMBERS[family]
            out[family] = members[int(rng.choice(len(members), p=posteriors[family, said]))]
    return out


def item_rng(seed: int, item_id: str) -> np.random.SeedSequence:
    """A seed sequence from ``(seed, item_id)`` via blake2b: stable across processes and runs."""
    digest = hashlib.blake2b(f"{seed}\x1f{item_id}".encode(), digest_size=16).digest()
    return np.random.SeedSequence(int.from_bytes(digest, "little"))


class PlantedGenerator:
    """A caption-to-image generator with planted blindspots (see the module docstring)."""

    def __init__(
        self,
        effects: Iterable[PlantedEffect | Mapping[str, object]] = (),
        seed: int = 0,
        size: int = 64,
        prior: Prior | None = None,
        caption_noise: float = 0.0,
    ):
        self.effects: tuple[PlantedEffect, ...] = tuple(
            e if isinstance(e, PlantedEffect) else PlantedEffect.from_dict(e) for e in effects
        )
        self.seed = check_seed(seed)
        self.size = check_size(size)
        if prior is not None and not isinstance(prior, Prior):
            raise ConfigError(f"prior must be a world Prior, got {type(prior).__name__}")
        self.prior = prior or Prior.default()
        if isinstance(caption_noise, bool) or not isinstance(caption_noise, (int, float)) or not 0 <= caption_noise < 1:
            raise ConfigError(f"caption_noise must be a number in [0, 1), got {caption_noise!r}")
        self.caption_noise = float(caption_noise)  # the world's caption noise, which the generator has learned
        self.silent = silent_prior(self.prior)
        self.posteriors = statement_posteriors(self.prior, self.caption_noise)

    def scene_for(self, caption: str, item_id: str) -> Scene:
        """The scene this generator draws for ``caption`` (no pixels; cheap)."""
        return self._scene(caption, self._streams(item_id))

    def _streams(self, item_id: str) -> list[np.random.Generator]:
        if not isinstance(item_id, str) or not item_id:
            raise ConfigError(f"item_id must be a non-empty string, got {item_id!r}")
        return [np.random.default_rng(s) for s in item_rng(self.seed, item_id).spawn(4)]

    def _scene(self, caption: str, streams: Sequence[np.random.Generator]) -> Scene:
        stated = parse_caption(caption)
        scene = sample_scene(streams[0], self.silent,
                             fixed=caption_posterior(stated, self.posteriors, streams[3]))
        for effect in self.effects:
            scene = effect.apply(scene, stated, streams[1], self.prior)
        return scene

    def generate(self, caption: str, item_id: str) -> WorldSample:
        """One image for ``caption``; deterministic given ``(seed, item_id)``."""
        streams = self._streams(item_id)
        scene = self._scene(caption, streams)
        drawn = render(scene, self.size, streams[2])
        return WorldSample(item_id, caption, drawn.image, scene, drawn.masks)

    def generate_many(self, captions: Sequence[str], item_ids: Sequence[str]) -> list[WorldSample]:
        """``generate`` over paired captions and ids."""
        if len(captions) != len(item_ids):
            raise ConfigError(f"expected one item id per caption, got {len(captions)} captions, {len(item_ids)} ids")
        return [self.generate(c, i) for c, i in zip(captions, item_ids)]

    def config(self) -> dict:
        """Plain description (effects, seed, size, prior) to save with the atlas."""
        return {
            "kind": "planted",
            "seed": self.seed,
            "size": self.size,
            "effects": [e.to_dict() for e in self.effects],
            "caption_noise": self.caption_noise,
            "prior": self.prior.to_dict(),
        }

    def __repr__(self) -> str:
        effects = ", ".join(f"{e.effect} {e.concept}@{e.rate:g}" for e in self.effects) or "none"
        return f"PlantedGenerator(seed={self.seed}, size={self.size}, effects=[{effects}])"
