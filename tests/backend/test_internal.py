"""Internal-lens read queries over an atlas the pipeline built with the internal stage."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from backend.atlas import Atlas, NotFound
from backend.steering.evaluation import control_features
from backend.views import internal
from precompute.errors import BlindspotError

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def atlas(internal_atlas):
    opened = Atlas(internal_atlas)
    yield opened
    opened.close()


@slow
def test_minority_ranking_lists_kept_features_most_minority_first(atlas):
    ranking = internal.minority_ranking(atlas, "world-model", limit=100)
    features = ranking["features"]
    assert features and ranking["kept"] == len(features)
    assert [f["minority_rank"] for f in features] == list(range(len(features)))
    scores = [f["minority"] for f in features]
    assert scores == sorted(scores, reverse=True)
    assert ranking["lens"]["point"] == "unet.mid_block"
    assert internal.minority_ranking(atlas, "world-model", limit=1, offset=1)["features"] == features[1:2]


@slow
def test_a_feature_card_has_scores_exemplars_with_heatmaps_and_concepts(atlas):
    best = internal.minority_ranking(atlas, "world-model", limit=1)["features"][0]
    card = internal.feature_card(atlas, "world-model", best["feature"])
    assert card["minority"] == best["minority"] and card["kept"]
    assert [e["rank"] for e in card["exemplars"]] == list(range(len(card["exemplars"])))
    grid = card["lens"]["grid"]
    for exemplar in card["exemplars"]:
        assert exemplar["image"].startswith("/images/") and exemplar["caption"]
        heatmap = exemplar["heatmap"]
        assert (heatmap["rows"], heatmap["cols"]) == tuple(grid)
        assert len(heatmap["values"]) == grid[0] * grid[1] and max(heatmap["values"]) == 255
    assert all({"concept", "label", "rank", "score"} <= set(c) for c in card["attributed_concepts"])


@slow
def test_concept_features_follow_the_attribution_ranks(atlas):
    concept = atlas.rows("SELECT concept FROM attributions WHERE source_id = 'world-model' ORDER BY concept LIMIT 1")
    concept = concept[0]["concept"]
    answer = internal.concept_features(atlas, concept)
    assert answer["generator"] == "world-model" and answer["probe"]["positives"] >= 3
    assert [f["rank"] for f in answer["features"]] == list(range(len(answer["features"])))
    proposal = internal.steer_proposal(atlas, "world-model", concept, count=2, floor=0.0)
    assert [f["feature"] for f in proposal["features"]] == [f["feature"] for f in answer["features"]
                                                            if f["score"] > 0][:2]


@slow
def test_a_proposal_steers_the_features_that_raise_the_concept_or_says_why_not(atlas):
    fitted = atlas.rows("""SELECT p.concept, p.auroc FROM attribution_probes p WHERE p.source_id = 'world-model'
                           AND p.auroc IS NOT NULL AND EXISTS (SELECT 1 FROM attributions a WHERE a.concept = p.concept
                           AND a.source_id = p.source_id) ORDER BY p.auroc DESC LIMIT 1""")[0]
    proposal = internal.steer_proposal(atlas, "world-model", fitted["concept"], floor=fitted["auroc"],
                                       direction="suppressed")
    assert proposal["refused"] is None and proposal["mode"] == "add" and 1 <= len(proposal["features"]) <= 3
    assert all(f["score"] > 0 for f in proposal["features"])  # only features whose increase raises its probe
    assert [f["rank"] for f in proposal["features"]] == sorted(f["rank"] for f in proposal["features"])
    edits = ",".join(f"{f['feature']}:{proposal['strength']:g}" for f in proposal["features"])
    assert proposal["steer_url"] == (f"/steer?generator=world-model&features={quote(edits, safe=':,')}&mode=add"
                                     f"&concept={fitted['concept']}&sweep=true")
    lowered = internal.steer_proposal(atlas, "world-model", fitted["concept"], floor=0.0, direction="exaggerated")
    assert (lowered["mode"], lowered["strength"]) == ("scale", -1.0) and "mode=scale" in lowered["steer_url"]
    strict = internal.steer_proposal(atlas, "world-model", fitted["concept"], floor=fitted["auroc"] + 1e-6)
    assert strict["features"] == [] and strict["steer_url"] is None
    assert "below the floor" in strict["refused"] and f"{fitted['auroc']:.3f}" in strict["refused"]
    unfitted = atlas.rows("SELECT concept FROM attribution_probes WHERE source_id = 'world-model' AND auroc IS NULL")
    if unfitted:
        refused = internal.steer_proposal(atlas, "world-model", unfitted[0]["concept"], floor=0.0)
        assert refused["features"] == [] and "no probe was fitted" in refused["refused"]
    with pytest.raises(BlindspotError, match="direction must be"):
        internal.steer_proposal(atlas, "world-model", fitted["concept"], direction="up")


@slow
def test_unknown_ids_are_not_found(atlas):
    with pytest.raises(NotFound, match="not a scored feature"):
        internal.feature_card(atlas, "world-model", 10_000)
    with pytest.raises(NotFound, match="no concept"):
        internal.concept_features(atlas, 10_000)
    with pytest.raises(NotFound, match="no internal lens for generator 'planted'"):
        internal.minority_ranking(atlas, "planted")


def test_an_atlas_without_internal_lens_raises_no_internal_lens(world_atlas):
    opened = Atlas(world_atlas)
    try:
        with pytest.raises(internal.NoInternalLens, match="no internal lens"):
            internal.minority_ranking(opened, "plain")
    finally:
        opened.close()


def test_control_features_are_random_scored_features_outside_the_attributed_ones():
    pool = list(range(20))
    drawn = control_features(pool, [1, 2, 3], 3, seed=5)
    assert len(drawn) == 3 and not set(drawn) & {1, 2, 3} and set(drawn) <= set(pool)
    assert drawn == control_features(pool, [1, 2, 3], 3, seed=5)
    assert len({tuple(control_features(pool, [1, 2, 3], 3, seed=s)) for s in range(10)}) > 1
    assert control_features([1, 2, 4], [1, 2], 3, seed=0) == [4]
