"""The blindspot-to-feature loop, measured: does steering a suppressed concept's attributed features bring it back?

For each concept the output lens flags as suppressed under a generator (``concept_stats``),
take the internal features most attributed to it (``attributions``, DiffLens-style)
and steer with all of them at once on captions of items whose real image shows the
concept (energy > 0, most energetic first); as a control, steer with as many scored
features drawn at random. Every steered image is compared with the unsteered
baseline of the same caption and seed by the concept's output-lens energy (the
steering service's measured effect). Reported per concept and overall: how often the
energy rose, and the mean and median change, for the attributed features and the control.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.atlas import Atlas, NotFound
from backend.internal import attributed_features, resolve_generator, scored_features
from backend.steering import SteeringService
from precompute.errors import ConfigError

log = logging.getLogger(__name__)

ARMS = ("attributed", "control")


@dataclass(frozen=True)
class SteerEvalSettings:
    """``concepts``: suppressed concepts tried (most suppressed first); ``features``: features steered per
    concept; ``prompts``: captions per concept; ``steps``: denoising steps (None: the generator's own);
    ``max_delta``: take the concepts with delta below this instead of those flagged suppressed (for an atlas
    whose energy scale leaves few concepts under the flag's threshold)."""

    concepts: int = 5
    features: int = 3
    strength: float = 10.0
    mode: str = "add"
    seeds: tuple[int, ...] = (0, 1)
    prompts: int = 4
    steps: int | None = None
    control_seed: int = 0
    max_delta: float | None = None

    def __post_init__(self) -> None:
        if self.concepts < 1 or self.features < 1 or self.prompts < 1 or not self.seeds:
            raise ConfigError(f"concepts, features and prompts must be >= 1 and seeds non-empty, got {self}")


@dataclass
class ArmResult:
    """One arm (attributed or control) of one concept: the concept's energy change per (prompt, seed)."""

    features: list[int]
    changes: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        changes = np.asarray(self.changes, dtype=float)
        if changes.size == 0:
            return {"features": self.features, "trials": 0, "raised": None, "mean_change": None,
                    "median_change": None}
        return {"features": self.features, "trials": int(changes.size), "raised": float((changes > 0).mean()),
                "mean_change": float(changes.mean()), "median_change": float(np.median(changes))}


def suppressed_concepts(atlas: Atlas, generator: str, count: int, max_delta: float | None = None) -> list[dict]:
    """The most suppressed live concepts of ``generator`` (flagged, or with delta below ``max_delta``) that have
    attributed features."""
    return atlas.rows("""
        SELECT s.concept, c.label, s.delta FROM concept_stats s JOIN concepts c USING (concept)
        WHERE s.source_id = ? AND (CASE WHEN ? IS NULL THEN s.suppressed ELSE s.delta < ? END) AND NOT c.is_dead
          AND EXISTS (SELECT 1 FROM attributions a WHERE a.source_id = s.source_id AND a.concept = s.concept)
        ORDER BY s.delta, s.concept LIMIT ?""", [generator, max_delta, max_delta, count])


def concept_prompts(atlas: Atlas, concept: int, count: int) -> list[str]:
    """Captions of the items whose real image shows ``concept`` most (energy > 0)."""
    return [r["caption"] for r in atlas.rows("""
        SELECT i.caption FROM energies e JOIN images m ON m.image_id = e.image_id
        JOIN items i ON i.item_id = m.item_id
        WHERE e.source_id = 'real' AND e.concept = ? AND e.energy > 0
        ORDER BY e.energy DESC, i.item_id LIMIT ?""", [concept, count])]


def control_features(pool: list[int], exclude: list[int], count: int, seed: int) -> list[int]:
    """``count`` scored features drawn at random (seeded) outside the attributed ones."""
    candidates = np.setdiff1d(np.asarray(pool, dtype=int), np.asarray(exclude, dtype=int))
    chosen = np.random.default_rng(seed).choice(candidates, size=min(count, candidates.size), replace=False)
    return sorted(int(f) for f in chosen)


def evaluate_steering(atlas_root: Path, generator: str | None = "world-model",
                      settings: SteerEvalSettings | None = None, *, service: SteeringService | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the loop on an atlas with an internal lens; see the module docstring. ``progress(n)`` counts steers."""
    settings = settings or SteerEvalSettings()
    atlas = Atlas(Path(atlas_root))
    try:
        generator, _ = resolve_generator(atlas, generator)
        concepts = suppressed_concepts(atlas, generator, settings.concepts, settings.max_delta)
        pool = scored_features(atlas, generator)
        plans = []
        for row in concepts:
            attributed = attributed_features(atlas, generator, row["concept"], settings.features)
            control = control_features(pool, attributed, len(attributed), settings.control_seed + row["concept"])
            plans.append((row, concept_prompts(atlas, row["concept"], settings.prompts),
                          {"attributed": ArmResult(attributed), "control": ArmResult(control)}))
        owned = service is None
        service = service or SteeringService.from_atlas(atlas, generator)
    finally:
        atlas.close()
    try:
        if not plans:
            which = "flagged suppressed" if settings.max_delta is None else f"with delta < {settings.max_delta:g}"
            raise NotFound(f"{generator!r} has no concept {which} that has attributed features in this atlas"
                           + ("; try --max-delta" if settings.max_delta is None else ""))
        _steer_all(service, settings, plans, progress)
    finally:
        if owned:
            service.close()
    return _report(generator, settings, plans)


def _steer_all(service: SteeringService, settings: SteerEvalSettings, plans: list,
               progress: Callable[[int], None] | None) -> None:
    for row, prompts, arms in plans:
        for prompt in prompts:
            for seed in settings.seeds:
                for arm in arms.values():
                    if not arm.features:
                        continue
                    request = service.request(prompt=prompt, seed=seed, steps=settings.steps, mode=settings.mode,
                                              concepts=[row["concept"]],
                                              features=[[f, settings.strength] for f in arm.features])
                    arm.changes.append(service.steer(request)["effect"][0]["difference"])
                    if progress is not None:
                        progress(1)


def planned_steers(settings: SteerEvalSettings) -> int:
    """The most steers a run makes (fewer when a concept has fewer captions or features)."""
    return settings.concepts * settings.prompts * len(settings.seeds) * len(ARMS)


def _report(generator: str, settings: SteerEvalSettings, plans: list) -> dict[str, Any]:
    per_concept, pooled = [], {arm: [] for arm in ARMS}
    for row, prompts, arms in plans:
        per_concept.append({**row, "prompts": len(prompts), **{arm: arms[arm].summary() for arm in ARMS}})
        for arm in ARMS:
            pooled[arm].extend(arms[arm].changes)
    overall = {arm: ArmResult([], pooled[arm]).summary() for arm in ARMS}
    for arm in ARMS:
        overall[arm].pop("features")
    return {"generator": generator, "settings": {**asdict(settings), "seeds": list(settings.seeds)},
            "concepts": per_concept, "overall": overall}
