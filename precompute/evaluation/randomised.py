"""Randomised ground truth: worlds and planted blindspots nobody chose, scored the same way.

A detector tuned on the demo's eight planted effects can look good on them alone. Here
each world seed gets ``plants`` planted generators whose effects are drawn at random
and one generator with no effect at all (``control = true``, another seed), an atlas
is built per world with the base config's output lens and analysis, and
``evaluate_world`` scores it. The summary gives mean, spread and worst case of recall,
false-alarm rate and Spearman over all random generators, and the null flags (real
half vs real half, and the no-effect control) of every world.

The draw, per generator: ``effects`` distinct families; in each, a concept whose prior
is at least 3%; the effect ``suppress`` (replaced by another member of its family, an
extra is removed) or, where captions often leave the family open (mention probability
at most 0.7: pattern, background, size, position, the extras), ``add`` with even
odds; a rate uniform in [0.5, 1.0]. An effect the captions leave no room for changes
nothing: ``evaluate_world`` lists it as ineffective instead of counting it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from precompute.config import RunConfig, parse_config
from precompute.errors import ConfigError
from precompute.evaluation.world import evaluate_world, json_safe
from precompute.progress import progress_bar
from precompute.world.captions import MENTION
from precompute.world.concepts import CONCEPT_BY_NAME, EXTRAS_FAMILY, FAMILY_MEMBERS, marginal_frequencies

MIN_PRIOR = 0.03
OPEN_FAMILY = 0.7  # an "add" is drawn only where captions mention the family at most this often
RATES = (0.5, 1.0)
STAGES = ["sample", "generate", "train", "encode", "analyze", "build"]


def _mention(family: str, concept: str) -> float:
    return MENTION[concept] if family == EXTRAS_FAMILY else MENTION[family]


def random_plants(rng: np.random.Generator, generators: int, effects: int,
                  min_prior: float = MIN_PRIOR) -> list[list[dict]]:
    """``generators`` lists of ``effects`` random planted effects (module docstring), as config tables."""
    prior = marginal_frequencies()
    eligible: dict[str, list[str]] = {}
    for name, frequency in prior.items():
        if frequency >= min_prior:
            eligible.setdefault(CONCEPT_BY_NAME[name].family, []).append(name)
    families = sorted(eligible)
    if effects > len(families):
        raise ConfigError(f"at most {len(families)} effects per generator (one per family), got {effects}")
    plants = []
    for _ in range(generators):
        chosen = []
        for family in rng.choice(families, size=effects, replace=False):
            concept = str(rng.choice(eligible[family]))
            can_add = _mention(family, concept) <= OPEN_FAMILY
            effect = "add" if can_add and rng.random() < 0.5 else "suppress"
            table = {"effect": effect, "concept": concept, "rate": round(float(rng.uniform(*RATES)), 3)}
            if effect == "suppress" and family != EXTRAS_FAMILY:
                others = [m for m in FAMILY_MEMBERS[family] if m != concept]
                table["replace_with"] = str(rng.choice(others))
            chosen.append(table)
        plants.append(chosen)
    return plants


def random_world_config(base: RunConfig, world_seed: int, plants: Sequence[list[dict]], pairs: int) -> RunConfig:
    """The base config's lens and analysis on world ``world_seed``: the planted generators plus a no-effect control."""
    source = base.source.model_dump(mode="json") if base.source.kind == "world" else {"kind": "world"}
    generators = [{"name": f"random-{i}", "kind": "planted", "seed": 1000 * world_seed + i + 1, "effects": effects}
                  for i, effects in enumerate(plants)]
    generators.append({"name": "no-effect", "kind": "planted", "seed": 1000 * world_seed + 999, "control": True})
    return parse_config({
        "run": {"name": f"random-world-{world_seed}", "seed": base.run.seed, "n_items": pairs},
        "source": {**source, "seed": world_seed},
        "generators": generators,
        "encode": base.encode.model_dump(mode="json", exclude_none=True),
        "analysis": base.analysis.model_dump(mode="json"),
    }, origin=f"random world {world_seed}")


def evaluate_random_worlds(base: RunConfig, seeds: Sequence[int], plants: int, *, pairs: int = 2000,
                           effects: int = 3, out: Path | None = None, min_auroc: float = 0.75,
                           say: Callable[[str], None] = lambda message: None, progress=progress_bar,
                           draw_seed: int = 0) -> dict:
    """Build and score one randomised world per seed; return a JSON-safe summary (module docstring)."""
    from precompute.pipeline import run_pipeline

    if not seeds:
        raise ConfigError("give at least one world seed")
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="random-worlds-"))
    worlds = []
    try:
        for seed in seeds:
            rng = np.random.default_rng([draw_seed, seed])
            drawn = random_plants(rng, plants, effects)
            config = random_world_config(base, seed, drawn, pairs)
            say(f"world seed {seed}: " + "; ".join(
                f"random-{i}: " + ", ".join(f"{e['effect']} {e['concept']}@{e['rate']:g}" for e in effects_)
                for i, effects_ in enumerate(drawn)))
            atlas = folder / f"world-{seed}" / "atlas"
            run_pipeline(config, atlas, stages=STAGES, progress=progress, say=say)
            evaluation = evaluate_world(atlas, min_auroc=min_auroc)
            worlds.append({"seed": seed, "plants": drawn, "evaluation": evaluation.to_dict(),
                           "null_flags": evaluation.null_flags})
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
    scores = [g for w in worlds for g in w["evaluation"]["generators"] if not g["control"]]
    metrics = {name: _spread([g[name] for g in scores]) for name in ("recall", "false_alarm_rate", "spearman",
                                                                               "spearman_relative")}
    undetected = sorted({name for w in worlds for name in w["evaluation"]["undetected"]})
    return json_safe({"seeds": list(seeds), "plants": plants, "effects": effects, "pairs": pairs,
                      "metrics": metrics, "null_flags": sum(w["null_flags"] for w in worlds),
                      "undetected": undetected, "worlds": worlds})


def _spread(values: list[float | None]) -> dict:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if known.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(known.mean()), "std": float(known.std()), "min": float(known.min()),
            "max": float(known.max()), "n": int(known.size)}
