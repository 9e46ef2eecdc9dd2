"""Ground truth on the embedded world: the demo's lens finds strong planted effects, raises no null flags, and a
randomly rotated lens (the control every metric must fail on) scores worse on every headline metric."""

from __future__ import annotations

import json

import pytest
import torch

from precompute.config import load_config, parse_config
from precompute.evaluation import evaluate_world
from precompute.evaluation.controls import rotated_sae
from precompute.evaluation.randomised import evaluate_random_worlds, random_plants
from precompute.linalg import random_orthogonal
from precompute.pipeline import run_pipeline
from precompute.sae import build_sae, load_sae
from precompute.sae.rasae import RASAE, RASAEConfig
from tests.conftest import silent_progress

STAGES = ["sample", "generate", "train", "encode", "analyze", "build"]


def demo_lens() -> dict:
    """The demo config's output lens and analysis, as config tables."""
    from app.cli import demo_config_path

    demo = load_config(demo_config_path())
    return {"encode": demo.encode.model_dump(mode="json", exclude_none=True),
            "analysis": {**demo.analysis.model_dump(mode="json"), "bootstrap": 0}}


@pytest.mark.parametrize("variant", ["topk", "rasae"])
def test_a_rotated_sae_reads_the_tokens_through_the_rotation(tmp_path, variant):
    torch.manual_seed(0)
    if variant == "rasae":
        sae = RASAE(RASAEConfig(input_dim=16, n_concepts=24, k=3, sparsity="topk"), candidates=torch.randn(24, 16))
    else:
        sae = build_sae("topk", input_dim=16, n_concepts=24, k=3)
    sae.save_pretrained(tmp_path / "sae")
    rotated = load_sae(rotated_sae(tmp_path / "sae", tmp_path / "rotated", seed=3))
    tokens = torch.randn(40, 16) * 3
    rotation = random_orthogonal(16, 3)
    torch.testing.assert_close(rotated.encode_codes(tokens), load_sae(tmp_path / "sae").encode_codes(tokens @ rotation.T),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_planted_effects_are_found_and_a_rotated_lens_is_not_fooled(tmp_path):
    config = parse_config({
        "run": {"name": "truth", "n_items": 500},
        "source": {"kind": "world", "seed": 7},
        "generators": [
            {"name": "planted", "kind": "planted", "seed": 8, "effects": [
                {"effect": "suppress", "concept": "circle", "rate": 1.0, "replace_with": "square"},
                {"effect": "add", "concept": "frame", "rate": 1.0}]},
            {"name": "no-effect", "kind": "planted", "seed": 9, "control": True},
        ],
        **demo_lens(),
    })
    run_pipeline(config, tmp_path / "atlas", progress=silent_progress, stages=STAGES)
    lens = evaluate_world(tmp_path / "atlas")
    scores = {g.source_id: g for g in lens.generators}
    planted, control = scores["planted"], scores["no-effect"]
    assert lens.null_flags == 0  # real half vs real half, and the no-effect generator
    assert control.control and control.flagged == 0
    assert planted.planted == 2 and planted.recall == 1.0, planted.missed
    json.dumps(lens.to_dict(), allow_nan=False)

    # The same world through a randomly rotated copy of the lens's SAE.
    from precompute.stages.common import StageContext
    from precompute.stages.train import sae_path

    trained = sae_path(StageContext(config=config, work=tmp_path / "atlas.work", progress=silent_progress))
    broken = config.model_copy(update={"encode": config.encode.model_copy(
        update={"sae": rotated_sae(trained, tmp_path / "rotated", seed=1)})})
    run_pipeline(broken, tmp_path / "rotated-atlas", work=tmp_path / "atlas.work", progress=silent_progress,
                 stages=STAGES)
    rotated = evaluate_world(tmp_path / "rotated-atlas")
    worse = next(g for g in rotated.generators if g.source_id == "planted")
    assert len(rotated.undetected) > len(lens.undetected)
    # a rotated lens may still "find" two strong effects by flagging nearly everything: its flags are false alarms
    assert (worse.recall or 0.0) <= planted.recall
    # (with the maximum as energy the rotated lens flags fewer concepts than with the sum: at 500 pairs 3 of its 7
    # flags are false against 1 of the real lens's 4; its ranking is what breaks: Spearman 0.49 against 0.93)
    assert worse.false_alarms > planted.false_alarms
    assert (worse.spearman or 0.0) < (planted.spearman or 0.0) - 0.3


def test_random_plants_follow_the_stated_rules():
    import numpy as np

    from precompute.world.captions import MENTION
    from precompute.world.concepts import CONCEPT_BY_NAME, marginal_frequencies

    prior = marginal_frequencies()
    plants = random_plants(np.random.default_rng(0), generators=40, effects=3)
    assert len(plants) == 40 and all(len(p) == 3 for p in plants)
    for effects in plants:
        families = [CONCEPT_BY_NAME[e["concept"]].family for e in effects]
        assert len(set(families)) == 3  # one effect per family
        for effect in effects:
            concept = CONCEPT_BY_NAME[effect["concept"]]
            assert prior[concept.name] >= 0.03 and 0.5 <= effect["rate"] <= 1.0
            if effect["effect"] == "add":
                key = concept.name if concept.family == "extras" else concept.family
                assert MENTION[key] <= 0.7
            if "replace_with" in effect:
                assert CONCEPT_BY_NAME[effect["replace_with"]].family == concept.family != "extras"
    kinds = {e["effect"] for p in plants for e in p}
    assert kinds == {"add", "suppress"}


@pytest.mark.slow
def test_randomised_worlds_report_consistent_statistics_and_no_null_flags(tmp_path):
    base = parse_config({"source": {"kind": "world"}, **demo_lens()})
    summary = evaluate_random_worlds(base, seeds=[31, 32], plants=2, pairs=300, effects=2, out=tmp_path,
                                     progress=silent_progress)
    json.dumps(summary, allow_nan=False)
    assert summary["null_flags"] == 0
    assert len(summary["worlds"]) == 2
    for world in summary["worlds"]:
        evaluation = world["evaluation"]
        names = [g["source_id"] for g in evaluation["generators"]]
        assert names == ["no-effect", "random-0", "random-1"]
        assert {r["control"] for r in evaluation["null_controls"]} == {"real-halves", "no-effect"}
        for g in evaluation["generators"]:
            assert 0 <= g["found"] <= g["planted"] <= 2 and 0 <= g["false_alarms"] <= g["flagged"]
            assert g["planted"] + len(g["ineffective"]) == (0 if g["control"] else 2)
            assert g["recall"] is None or g["recall"] == pytest.approx(g["found"] / g["planted"])
    recall, spearman = summary["metrics"]["recall"], summary["metrics"]["spearman"]
    false_alarms = summary["metrics"]["false_alarm_rate"]
    assert recall["n"] >= 3 and recall["min"] <= recall["mean"] <= recall["max"]
    # the world lens's targets on worlds nobody tuned for, at this reduced size (README, "Measured on the demo
    # world": 2,000 pairs x 3 seeds x 3 plants, where the false alarms need the demo's effect-size floor; at 300
    # pairs the small shifts it removes are rarely significant, so here it changes nothing)
    assert recall["mean"] >= 0.9 and false_alarms["mean"] <= 0.1
    # Spearman's target is 0.7: the demo's lens (maximum as energy) measures 0.93 here, 0.89-0.92 per set of three
    # worlds at 2,000 pairs (README)
    assert spearman["mean"] >= 0.7
    # detectability on the worlds' real images: every world concept of prior >= 2% has a detector at AUROC 0.9,
    # the world's defaults (solid, plain_white, count_one) included
    assert summary["undetected"] == []
