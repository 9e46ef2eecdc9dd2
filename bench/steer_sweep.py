"""Which steering settings bring a suppressed concept back? A batched sweep over an atlas with an internal lens.

For the generator's most suppressed concepts (those ``eval steer`` picks), steer the
captions whose real image shows the concept most, with the concept's proposed features
and, as a control, as many random scored features, under each setting of a grid
(mode, strength in the features' own units, steered steps, features per concept), and
measure every image with the atlas's output lens. The images of one (concept, arm,
setting) are made in one batch through the same hook as the steering service
(``precompute.generators.steering``), so a grid of a few hundred steers takes minutes,
not the service's one image at a time; the numbers agree with ``eval steer`` up to the
float rounding of batched kernels.

    OMP_NUM_THREADS=1 python bench/steer_sweep.py ATLAS --grid add:1,2,4,8 --ranges all,0-8,0-16,8-25

Per setting it prints, per arm: the share of steers whose target energy rose, its mean
change, and the specificity (target change over the other live concepts' mean absolute
change); ``--json`` writes the rows. ``bench/steer_sweep.md`` records the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.atlas import Atlas  # noqa: E402
from backend.steering.evaluation import (SteerEvalSettings, live_concepts, plan_concepts, summary,  # noqa: E402
                                Outcome, Steer)
from backend.steering.atlas import atlas_parts  # noqa: E402


@dataclass
class Models:
    pipeline: object
    sae: object
    lens: object
    typical: np.ndarray
    norms: np.ndarray
    point: str
    size: tuple[int, int]
    steps: int
    guidance: float


def load_models(atlas: Path, generator: str) -> Models:
    from precompute.encoders import load_energy_model
    from precompute.generators.registry import load_world_model
    from precompute.progress import quiet_library_bars
    from precompute.sae import load_sae
    from precompute.encoders.lens import Lens

    quiet_library_bars()
    parts = atlas_parts(atlas, generator, device="cpu")
    pipeline = load_world_model(parts.generator, "cpu").pipeline
    pipeline.set_progress_bar_config(disable=True)
    sae = load_sae(parts.internal_sae, device="cpu")
    lens = Lens.from_parts(load_energy_model(parts.energy_model, device="cpu"),
                           load_sae(parts.output_sae, device="cpu"), parts.patch_tokens_only,
                           aggregation=parts.aggregation)
    norms = sae.dictionary.detach().norm(dim=-1).numpy()
    return Models(pipeline, sae, lens, np.asarray(parts.typical), norms, parts.point, parts.size or (64, 64),
                  parts.generator.steps, parts.generator.guidance)


def energies(models: Models, prompts: list[str], seeds: list[int], steering=None,
             steps: int | None = None) -> np.ndarray:
    """(images, K) output-lens energies of one batch, steered when ``steering`` (a SteeringConfig) is given."""
    from contextlib import nullcontext

    from precompute.generators.steering import apply_steering

    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad(), (apply_steering(models.pipeline, models.sae, steering) if steering else nullcontext()):
        images = models.pipeline(prompts, num_inference_steps=steps or models.steps, guidance_scale=models.guidance,
                                 generator=generators).images
    images = [im.convert("RGB").resize(models.size, Image.BICUBIC) for im in images]
    tokens = models.lens.model.encode(images).tokens
    codes = models.lens.sae.encode_codes(tokens.to(models.lens.sae.W_enc.dtype)).float()
    return models.lens.energy(codes).numpy()


def steering_config(models: Models, features: tuple[int, ...], strength: float, mode: str,
                    steps: tuple[int, int] | None):
    from precompute.generators.steering import FeatureEdit, SteeringConfig

    if mode == "add":  # strength in the feature's own units, as the service converts it
        edits = tuple(FeatureEdit(f, strength * float(models.typical[f]) * float(models.norms[f])) for f in features)
    elif mode == "add-raw":  # the former unit: activation units along the unit direction
        edits, mode = tuple(FeatureEdit(f, strength) for f in features), "add"
    else:
        edits = tuple(FeatureEdit(f, strength) for f in features)
    return SteeringConfig(point=models.point, edits=edits, mode=mode, steps=steps, guided=models.guidance > 1)


def parse_range(text: str, steps: int) -> tuple[int, int] | None:
    if text == "all":
        return None
    start, stop = (int(v) for v in text.split("-"))
    return (start, min(stop, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--generator", default="world-model")
    parser.add_argument("--grid", nargs="+", default=["add:1,2,4"],
                        help="mode:strength,strength,... (modes: add, add-raw, scale)")
    parser.add_argument("--ranges", default="all", help="steered steps, comma-separated: all or start-stop")
    parser.add_argument("--features", default="3", help="features per concept, comma-separated")
    parser.add_argument("--concepts", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--min-auroc", type=float, default=0.0)
    parser.add_argument("--max-delta", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = load_models(args.atlas, args.generator)
    atlas = Atlas(args.atlas)
    try:
        live = live_concepts(atlas)
        plans = {}
        for count in (int(c) for c in args.features.split(",")):
            settings = SteerEvalSettings(concepts=args.concepts, features=count, prompts=args.prompts,
                                         seeds=tuple(seeds), min_auroc=args.min_auroc, max_delta=args.max_delta)
            plans[count], skipped = plan_concepts(atlas, args.generator, settings)
    finally:
        atlas.close()
    print("skipped:", [(s["concept"], s["reason"][:60]) for s in skipped], file=sys.stderr)
    first = next(iter(plans.values()))
    print("concepts:", [(p.concept["concept"], p.concept["label"], p.features) for p in first], file=sys.stderr)
    baselines = {}
    for plan in first:
        prompts = [p for p in plan.prompts for _ in seeds]
        baselines[plan.concept["concept"]] = (prompts, seeds * len(plan.prompts),
                                              energies(models, prompts, seeds * len(plan.prompts)))
    rows = []
    for grid in args.grid:
        mode, _, strengths = grid.partition(":")
        for strength in (float(s) for s in strengths.split(",")):
            for text in args.ranges.split(","):
                steps = parse_range(text, models.steps)
                for count, concept_plans in plans.items():
                    started = time.perf_counter()
                    outcomes = []
                    for plan in concept_plans:
                        concept = plan.concept["concept"]
                        prompts, seed_list, before = baselines[concept]
                        for arm, features in plan.features.items():
                            after = energies(models, prompts, seed_list,
                                             steering_config(models, tuple(features), strength, mode, steps))
                            others = live.copy()
                            others[concept] = False
                            spread = np.abs(after - before)[:, others].mean(axis=1)
                            for i in range(len(prompts)):
                                outcomes.append(Outcome(Steer(concept, arm, strength, prompts[i], seed_list[i],
                                                              tuple(features)), float(before[i, concept]),
                                                        float(after[i, concept]), float(spread[i])))
                    row = {"mode": mode, "strength": strength, "steps": text, "features": count,
                           "seconds": round(time.perf_counter() - started, 1),
                           **{arm: summary(o for o in outcomes if o.steer.arm == arm)
                              for arm in ("attributed", "control")},
                           "per_concept": {str(p.concept["concept"]): summary(
                               o for o in outcomes if o.steer.arm == "attributed"
                               and o.steer.concept == p.concept["concept"])["raised"] for p in concept_plans}}
                    rows.append(row)
                    a, c = row["attributed"], row["control"]
                    print(f"{mode:8s} {strength:6g} steps {text:6s} f{count}  attributed raised {a['raised']:.0%} "
                          f"mean {a['mean_change']:+.3f} spec {a['specificity'] or 0:+.2f} | control raised "
                          f"{c['raised']:.0%} mean {c['mean_change']:+.3f} spec {c['specificity'] or 0:+.2f} | "
                          f"per concept {row['per_concept']}  ({row['seconds']} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
