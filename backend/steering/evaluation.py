"""The blindspot-to-feature loop, measured: does steering a suppressed concept's attributed features bring it back?

For each concept the output lens flags as suppressed under a generator (``concept_stats``),
the steering proposal (``backend.views.internal.steer_proposal``: the features whose increase
raises the concept's probe, refused when the probe's held-out AUROC is below the floor)
is steered, all features at once, on captions of items whose real image shows the
concept (energy > 0, most energetic first); as a control, as many scored features drawn
at random are steered the same way. Add-mode strengths are in each feature's own units
(multiples of its typical activation), so both arms push equally hard. Each steered
image is compared with the unsteered baseline of the same caption and seed by the
output-lens energy of every concept (the steering service's measured effect).

Reported per concept and overall, per arm: how often the target's energy rose, its mean
and median change, and the specificity (DESIGN.md section 2b): the target's mean change
over the mean absolute change of the other live concepts; and the same per strength (the
dose-response). A steer that fails (its time limit, an error) is listed with its reason
and the evaluation goes on; the report counts planned, done and failed steers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.atlas import Atlas
from backend.steering.atlas import service_for
from backend.steering.inputs import DEFAULT_STRENGTH, SteeringLimits
from backend.steering.service import SteeringService
from backend.views.internal import PROBE_FLOOR, resolve_generator, scored_features, steer_proposal
from precompute.errors import ConfigError

log = logging.getLogger(__name__)

ARMS = ("attributed", "control")


@dataclass(frozen=True)
class SteerEvalSettings:
    """``concepts``: suppressed concepts tried (most suppressed first); ``features``: features steered per
    concept; ``strength``: the headline strength (add mode: multiples of each feature's typical activation);
    ``doses``: further strengths of the dose-response; ``prompts``: captions per concept; ``steps``: denoising
    steps (None: the generator's own); ``max_delta``: take the concepts with delta below this instead of those
    flagged suppressed; ``timeout_s``: each steer's time limit (None: none); ``min_auroc``: the probe floor."""

    concepts: int = 5
    features: int = 3
    strength: float = DEFAULT_STRENGTH["add"]
    doses: tuple[float, ...] = ()
    mode: str = "add"
    seeds: tuple[int, ...] = (0, 1)
    prompts: int = 4
    steps: int | None = None
    control_seed: int = 0
    max_delta: float | None = None
    timeout_s: float | None = None
    min_auroc: float = PROBE_FLOOR

    def __post_init__(self) -> None:
        if self.concepts < 1 or self.features < 1 or self.prompts < 1 or not self.seeds:
            raise ConfigError(f"concepts, features and prompts must be >= 1 and seeds non-empty, got {self}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0 seconds (or None: no limit), got {self.timeout_s!r}")

    @property
    def strengths(self) -> tuple[float, ...]:
        """Every strength steered, ascending: the headline strength and the doses."""
        return tuple(sorted({float(self.strength), *map(float, self.doses)}))


@dataclass(frozen=True)
class Steer:
    """One planned steer: a concept's arm at one strength, on one caption and seed.

    Feature ``i`` is steered at ``strength * base[i]`` (``base`` None: at ``strength`` each), so a sweep
    can scale strengths that differ per feature by one factor.
    """

    concept: int
    arm: str
    strength: float
    prompt: str
    seed: int
    features: tuple[int, ...]
    base: tuple[float, ...] | None = None

    def edits(self) -> list[list[float]]:
        base = self.base or (1.0,) * len(self.features)
        return [[f, self.strength * b] for f, b in zip(self.features, base)]


@dataclass
class Outcome:
    """What one steer measured (``reason`` set instead when it failed)."""

    steer: Steer
    baseline: float | None = None  # the target concept's energy, unsteered
    steered: float | None = None
    others: float | None = None  # mean |energy change| of the other live concepts
    reason: str | None = None

    @property
    def change(self) -> float | None:
        return None if self.reason is not None else self.steered - self.baseline

    def failure(self) -> dict[str, Any]:
        s = self.steer
        return {"concept": s.concept, "arm": s.arm, "strength": s.strength, "prompt": s.prompt, "seed": s.seed,
                "features": list(s.features), "reason": self.reason}


def summary(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """One group of steers: trials (done), failed, raised (share with a positive change), mean and median change,
    the other concepts' mean absolute change and the specificity (None where nothing was measured)."""
    outcomes = list(outcomes)
    done = [o for o in outcomes if o.reason is None]
    record: dict[str, Any] = {"trials": len(done), "failed": len(outcomes) - len(done), "raised": None,
                              "mean_change": None, "median_change": None, "others_mean_abs_change": None,
                              "specificity": None}
    if not done:
        return record
    changes = np.array([o.change for o in done], dtype=float)
    others = float(np.mean([o.others for o in done]))
    record.update(raised=float((changes > 0).mean()), mean_change=float(changes.mean()),
                  median_change=float(np.median(changes)), others_mean_abs_change=others,
                  specificity=float(changes.mean() / others) if others > 0 else None)
    return record


def dose_response(outcomes: list[Outcome], strengths: Iterable[float]) -> list[dict[str, Any]]:
    """Per strength, each arm's summary."""
    return [{"strength": s, **{arm: summary(o for o in outcomes if o.steer.arm == arm and o.steer.strength == s)
                               for arm in ARMS}} for s in strengths]


def suppressed_concepts(atlas: Atlas, generator: str, max_delta: float | None = None) -> list[dict]:
    """The live concepts of ``generator`` flagged suppressed (or with delta below ``max_delta``), most first: by
    delta, then by the energy lost (a small T saturates delta at 0 for every large drop)."""
    return atlas.rows("""
        SELECT s.concept, c.label, s.delta FROM concept_stats s JOIN concepts c USING (concept)
        WHERE s.source_id = ? AND (CASE WHEN ? IS NULL THEN s.suppressed ELSE s.delta < ? END) AND NOT c.is_dead
        ORDER BY s.delta, s.e_gen - s.e_real, s.concept""", [generator, max_delta, max_delta])


def concept_prompts(atlas: Atlas, concept: int, count: int) -> list[str]:
    """Captions of the items whose real image shows ``concept`` most (energy > 0)."""
    return [r["caption"] for r in atlas.rows("""
        SELECT i.caption FROM energies e JOIN images m ON m.image_id = e.image_id
        JOIN items i ON i.item_id = m.item_id
        WHERE e.source_id = 'real' AND e.concept = ? AND e.energy > 0
        ORDER BY e.energy DESC, i.item_id LIMIT ?""", [concept, count])]


def live_concepts(atlas: Atlas) -> np.ndarray:
    """(K,) bool: the concepts that are not dead (the others' mean change is over these)."""
    rows = atlas.rows("SELECT concept, is_dead FROM concepts ORDER BY concept")
    live = np.zeros(len(rows), dtype=bool)
    live[[r["concept"] for r in rows]] = [not r["is_dead"] for r in rows]
    return live


def control_features(pool: list[int], exclude: list[int], count: int, seed: int) -> list[int]:
    """``count`` scored features drawn at random (seeded) outside the attributed ones."""
    candidates = np.setdiff1d(np.asarray(pool, dtype=int), np.asarray(exclude, dtype=int))
    chosen = np.random.default_rng(seed).choice(candidates, size=min(count, candidates.size), replace=False)
    return sorted(int(f) for f in chosen)


def run_steers(service: SteeringService, steers: list[Steer], *, mode: str, live: np.ndarray,
               fields: dict[str, Any] | None = None, progress: Callable[[int], None] | None = None,
               submit: Callable[[Any], dict[str, Any]] | None = None) -> list[Outcome]:
    """Steer each planned steer through the service and measure it; a failure is recorded and the next one runs.

    ``fields``: further request fields shared by every steer (steps, guidance, step_range, ...);
    ``submit(request) -> result`` runs one validated request (default: ``service.steer``, blocking);
    ``progress(1)`` is called after every steer, done or failed.
    """
    submit = submit or service.steer
    outcomes = []
    for steer in steers:
        outcome = Outcome(steer)
        try:
            request = service.request(prompt=steer.prompt, seed=steer.seed, mode=mode, concepts=[steer.concept],
                                      features=steer.edits(), **(fields or {}))
            before, after = service.energy_vectors(submit(request))
            change = np.abs(after - before)
            others = live.copy()
            others[steer.concept] = False
            outcome.baseline, outcome.steered = float(before[steer.concept]), float(after[steer.concept])
            outcome.others = float(change[others].mean()) if others.any() else 0.0
        except Exception as exc:  # noqa: BLE001 -- a failed steer is recorded with its reason; the run goes on
            outcome.reason = f"{type(exc).__name__}: {exc}"
            log.warning("steer of concept %d (%s, strength %g, seed %d) failed: %s", steer.concept, steer.arm,
                        steer.strength, steer.seed, outcome.reason)
        outcomes.append(outcome)
        if progress is not None:
            progress(1)
    return outcomes


@dataclass
class Plan:
    """What one concept is steered with, on which captions, and why a concept is left out."""

    concept: dict[str, Any]
    probe: dict[str, Any] | None
    prompts: list[str]
    features: dict[str, list[int]] = field(default_factory=dict)


def plan_concepts(atlas: Atlas, generator: str, settings: SteerEvalSettings) -> tuple[list[Plan], list[dict]]:
    """The concepts to steer (most suppressed first, with a proposal) and the more suppressed ones left out."""
    pool = scored_features(atlas, generator)
    plans, skipped = [], []
    for row in suppressed_concepts(atlas, generator, settings.max_delta):
        if len(plans) == settings.concepts:
            break
        proposal = steer_proposal(atlas, generator, row["concept"], count=settings.features, floor=settings.min_auroc)
        prompts = concept_prompts(atlas, row["concept"], settings.prompts)
        reason = proposal["refused"] or (None if prompts else "no real image shows it (no caption to steer)")
        if reason:
            skipped.append({**row, "reason": reason})
            continue
        attributed = [f["feature"] for f in proposal["features"]]
        control = control_features(pool, attributed, len(attributed), settings.control_seed + row["concept"])
        plans.append(Plan(row, proposal["probe"], prompts, {"attributed": attributed, "control": control}))
    return plans, skipped


def planned_steers(plans: list[Plan], settings: SteerEvalSettings) -> list[Steer]:
    """Every steer of the plans: concept x caption x seed x strength x arm (an arm without features has none)."""
    return [Steer(plan.concept["concept"], arm, strength, prompt, seed, tuple(plan.features[arm]))
            for plan in plans for prompt in plan.prompts for seed in settings.seeds
            for strength in settings.strengths for arm in ARMS if plan.features[arm]]


@dataclass
class SteerEvaluation:
    """A planned evaluation: the concepts chosen (and those left out, with why) and every steer it will make."""

    atlas_root: Path
    generator: str
    settings: SteerEvalSettings
    plans: list[Plan]
    skipped: list[dict]
    live: np.ndarray
    steers: list[Steer]

    @classmethod
    def plan(cls, atlas_root: Path, generator: str | None = "world-model",
             settings: SteerEvalSettings | None = None) -> SteerEvaluation:
        """Choose the concepts and their features; nothing is generated yet."""
        settings = settings or SteerEvalSettings()
        atlas = Atlas(Path(atlas_root))
        try:
            generator, _ = resolve_generator(atlas, generator)
            plans, skipped = plan_concepts(atlas, generator, settings)
            live = live_concepts(atlas)
        finally:
            atlas.close()
        return cls(Path(atlas_root), generator, settings, plans, skipped, live, planned_steers(plans, settings))

    def run(self, service: SteeringService | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Make every steer and report (``progress(1)`` after each). Without ``service`` one is made with the run's
        own time limit (``settings.timeout_s``), not the server's per-request limit."""
        owned = service is None and bool(self.steers)
        if owned:
            service = service_for(self.atlas_root, self.generator,
                                  limits=SteeringLimits(timeout_s=self.settings.timeout_s))
        try:
            outcomes = []
            if self.steers:
                service.load()  # before the first steer, so that no steer's time limit pays for loading the models
                outcomes = run_steers(service, self.steers, mode=self.settings.mode, live=self.live,
                                      fields={"steps": self.settings.steps}, progress=progress)
        finally:
            if owned:
                service.close()
        return report(self.generator, self.settings, self.plans, self.skipped, outcomes, self.why_empty())

    def why_empty(self) -> str | None:
        """Why nothing will be steered, or None."""
        if self.steers:
            return None
        which = ("flagged suppressed" if self.settings.max_delta is None
                 else f"with delta < {self.settings.max_delta:g}")
        reasons = "; ".join(f"{s['concept']} {s['label']}: {s['reason']}" for s in self.skipped[:5])
        hint = "; try --max-delta" if self.settings.max_delta is None else ""
        return (f"{self.generator!r} has no concept {which} that can be steered in this atlas"
                + (f" ({reasons})" if reasons else "") + hint)


def evaluate_steering(atlas_root: Path, generator: str | None = "world-model",
                      settings: SteerEvalSettings | None = None, *, service: SteeringService | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Plan and run the loop on an atlas with an internal lens; see the module docstring."""
    return SteerEvaluation.plan(atlas_root, generator, settings).run(service, progress)


def report(generator: str, settings: SteerEvalSettings, plans: list[Plan], skipped: list[dict],
           outcomes: list[Outcome], error: str | None = None) -> dict[str, Any]:
    """The evaluation's JSON report (its keys are stable: ``overall`` always has both arms with ``raised``,
    ``mean_change`` and ``trials``; ``raised`` and the means are None for an arm that measured nothing;
    ``error`` says why nothing was planned)."""
    headline = [o for o in outcomes if o.steer.strength == float(settings.strength)]
    concepts = []
    for plan in plans:
        concept = plan.concept["concept"]
        mine = [o for o in outcomes if o.steer.concept == concept]
        concepts.append({
            **plan.concept, "probe_auroc": (plan.probe or {}).get("auroc"), "prompts": len(plan.prompts),
            **{arm: {"features": plan.features[arm], **summary(o for o in headline
                                                               if o.steer.concept == concept and o.steer.arm == arm)}
               for arm in ARMS},
            "dose_response": dose_response(mine, settings.strengths)})
    overall = {arm: summary(o for o in headline if o.steer.arm == arm) for arm in ARMS}
    attributed, control = overall["attributed"]["raised"], overall["control"]["raised"]
    overall["raised_ratio"] = attributed / control if attributed is not None and control else None
    failed = [o for o in outcomes if o.reason is not None]
    return {"generator": generator, "error": error,
            "settings": {**asdict(settings), "seeds": list(settings.seeds), "doses": list(settings.doses),
                         "strengths": list(settings.strengths)},
            "steers": {"planned": len(outcomes), "done": len(outcomes) - len(failed), "failed": len(failed)},
            "concepts": concepts, "skipped": skipped, "overall": overall,
            "dose_response": dose_response(outcomes, settings.strengths),
            "failures": [o.failure() for o in failed]}
