"""The internal stage end to end: the shipped world model with capture, the world encoder, the atlas tables."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from precompute.atlas.writer import ATLAS_DB
from precompute.config import parse_config
from precompute.pipeline import run_pipeline
from precompute.stages.common import StageContext
from precompute.stages.encode import ENERGIES, encode_store, lens_digest
from tests.conftest import silent_progress

STAGES = ["sample", "generate", "train", "encode", "internal", "build"]  # analyze (UMAP) is not needed here


def internal_config(**internal):
    return parse_config({
        "run": {"n_items": 30, "name": "internal"},
        "source": {"kind": "world", "size": 32, "seed": 7},
        "generators": [{"name": "wm", "kind": "world-model", "steps": 2, "capture": ["unet.mid_block"],
                        "device": "cpu"},
                       {"name": "planted", "kind": "planted"}],
        "encode": {"energy_model": "world", "n_concepts": 32, "k": 4, "train_epochs": 1, "train_batch_size": 256,
                   "batch_size": 16, "exemplars": 2, "device": "cpu"},
        "internal": [{"generator": "wm", "expansion": 2, "k": 8, "batch_size": 64, "epochs": 2, "lr": 1e-3,
                      "exemplars": 3, "probe": {"min_positives": 3, "steps": 30}, **internal}],
    })


@pytest.fixture(scope="module")
def internal_atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("internal") / "atlas"
    report = run_pipeline(internal_config(), out, progress=silent_progress, stages=STAGES)
    return out, report


def rows(atlas, sql, params=()):
    with duckdb.connect(str(atlas / ATLAS_DB), read_only=True) as db:
        return db.execute(sql, list(params)).fetchall()


def test_the_stage_publishes_its_sae_and_describes_it(internal_atlas):
    from precompute.sae import load_sae

    atlas, report = internal_atlas
    assert report.ran == STAGES
    info = json.loads(rows(atlas, "SELECT value FROM atlas_info WHERE key = 'internal'")[0][0])
    assert info == {"wm": {"point": "unet.mid_block", "step": 1, "sae": "models/internal-sae/wm", "channels": 64,
                           "grid": [4, 4], "scored_features": 8}}  # 2 x 64 features, the first 1/16 scored
    sae = load_sae(atlas / info["wm"]["sae"])
    assert sae.n_concepts == 128 and sae.prefix_width(1) == 8 and sae.input_dim == 64
    assert "internal" in json.loads(rows(atlas, "SELECT value FROM atlas_info WHERE key = 'stages'")[0][0])
    manifest = json.loads(rows(atlas, "SELECT manifest FROM manifests WHERE stage = 'internal'")[0][0])
    counts = manifest["counts"]
    assert counts["images"] == 30 and counts["positions"] == 30 * 16 and counts["scored"] == 8
    assert 0 < counts["kept"] <= 8 - counts["dead"] and counts["heatmaps"] > 0
    assert 0 < counts["explained_variance"] <= 1 and counts["probes"] > 0


def test_minority_ranks_and_kept_features_are_consistent(internal_atlas):
    atlas, _ = internal_atlas
    features = rows(atlas, """SELECT feature, frequency, distinctiveness, minority, kept, minority_rank
                              FROM internal_features WHERE source_id = 'wm' ORDER BY feature""")
    assert [f[0] for f in features] == list(range(8))
    live = [f for f in features if f[1] > 0]
    assert all(0 <= f[3] <= 1 and f[2] is not None for f in live)
    # minority = minmax(d) * (1 - minmax(nu)) over the live features, from the stored raw columns
    recomputed = dict(rows(atlas, """
        WITH r AS (SELECT min(frequency) AS f0, max(frequency) AS f1, min(distinctiveness) AS d0,
                          max(distinctiveness) AS d1 FROM internal_features WHERE frequency > 0)
        SELECT feature, (distinctiveness - d0) / (d1 - d0) * (1 - (frequency - f0) / (f1 - f0))
        FROM internal_features, r WHERE frequency > 0"""))
    assert all(f[3] == pytest.approx(recomputed[f[0]], abs=1e-9) for f in live)
    kept = sorted((f for f in features if f[4]), key=lambda f: f[5])
    assert [f[5] for f in kept] == list(range(len(kept)))
    assert kept[0][3] == max(f[3] for f in live)  # the best feature is always kept, at rank 0
    assert all(f[5] is None for f in features if not f[4])


def test_exemplars_and_heatmaps_point_at_generated_images(internal_atlas):
    atlas, _ = internal_atlas
    orphans = rows(atlas, """SELECT count(*) FROM internal_exemplars e LEFT JOIN images i
                             ON i.image_id = e.source_id || '/' || e.item_id WHERE i.image_id IS NULL""")
    assert orphans == [(0,)]
    exemplars = rows(atlas, "SELECT feature, rank, score FROM internal_exemplars ORDER BY feature, rank")
    for feature in {e[0] for e in exemplars}:
        scores = [e[2] for e in exemplars if e[0] == feature]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    maps = rows(atlas, "SELECT feature, item_id, grid_rows, grid_cols, scale, heatmap FROM internal_heatmaps")
    assert len(maps) == len(exemplars)
    assert all(m[2:4] == (4, 4) and len(m[5]) == 16 and m[4] > 0 and max(m[5]) == 255 for m in maps)
    # a map's mean code per position is the exemplar's score (both read the same positions)
    by_pair = {(m[0], m[1]): np.frombuffer(m[5], dtype=np.uint8) * m[4] / 255 for m in maps}
    for feature, item, score in rows(atlas, "SELECT feature, item_id, score FROM internal_exemplars"):
        assert by_pair[(feature, item)].mean() == pytest.approx(score, rel=0.02, abs=1e-3)


def test_attributions_link_output_concepts_to_scored_features(internal_atlas):
    atlas, _ = internal_atlas
    probes = rows(atlas, "SELECT concept, positives, auroc FROM attribution_probes WHERE source_id = 'wm'")
    assert sorted(p[0] for p in probes) == list(range(32))  # every output-lens concept, fitted or not
    # positives: the generated images where the output lens gives the concept energy > 0 (the encode stage's)
    config = internal_config()
    ctx = StageContext(config=config, work=atlas.parent / f"{atlas.name}.work", progress=silent_progress)
    energies = encode_store(ctx, lens_digest(ctx), "wm").read("energies", ENERGIES).to_pandas()
    present = energies[energies["energy"] > 0].groupby("concept").size()
    assert all(p[1] == present.get(p[0], 0) for p in probes)
    fitted = {p[0] for p in probes if p[2] is not None}
    attributed = rows(atlas, "SELECT concept, rank, feature, score FROM attributions WHERE source_id = 'wm'")
    assert attributed and {a[0] for a in attributed} <= fitted
    assert all(0 <= a[2] < 8 and a[3] > 0 for a in attributed)  # only scored features, positive IG
    for concept in {a[0] for a in attributed}:
        ranked = sorted((a for a in attributed if a[0] == concept), key=lambda a: a[1])
        assert [a[1] for a in ranked] == list(range(len(ranked)))
        assert [a[3] for a in ranked] == sorted((a[3] for a in ranked), reverse=True)


def test_every_feature_has_its_typical_activation_from_the_captured_positions(internal_atlas):
    import math

    from precompute.sae import load_sae
    from precompute.stages.generate import generator_store, read_capture

    atlas, _ = internal_atlas
    scales = rows(atlas, "SELECT feature, fired, typical FROM internal_feature_scales WHERE source_id = 'wm' "
                         "ORDER BY feature")
    sae = load_sae(atlas / "models" / "internal-sae" / "wm")
    assert [s[0] for s in scales] == list(range(sae.n_concepts))  # all groups, not only the scored one
    config = internal_config()
    ctx = StageContext(config=config, work=atlas.parent / f"{atlas.name}.work", progress=silent_progress)
    positions = read_capture(generator_store(ctx, config.generators[0]), "unet.mid_block", 1)["positions"]
    codes = sae.encode_codes(positions.float())
    fired = (codes > 0).sum(dim=0)
    assert [s[1] for s in scales] == fired.tolist()
    for feature, count, typical in scales:
        if count == 0:
            assert typical is None
        else:  # the 90th percentile of the feature's codes where it fires (order statistic ceil(0.9 n)), to a bin
            firing = codes[:, feature][codes[:, feature] > 0].double().sort().values
            assert typical == pytest.approx(firing[math.ceil(0.9 * count) - 1].item(), rel=0.025)


def test_a_second_run_reuses_the_finished_outputs(internal_atlas):
    atlas, _ = internal_atlas
    work = atlas.parent / f"{atlas.name}.work"
    sae_files = sorted((work / "internal" / "sae").rglob("model.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in sae_files}
    report = run_pipeline(internal_config(), atlas, progress=silent_progress, stages=["internal"])
    assert report.manifests[0]["counts"]["images"] == 30
    assert {p: p.stat().st_mtime_ns for p in sae_files} == before
    # another tau reuses the trained SAE and recomputes only the scores
    report = run_pipeline(internal_config(nms_tau=2.0), atlas, progress=silent_progress, stages=["internal"])
    assert report.manifests[0]["counts"]["kept"] == 1
    assert sorted((work / "internal" / "sae").rglob("model.safetensors")) == sae_files


def test_a_config_without_internal_tables_runs_no_internal_stage(tmp_path):
    from tests.conftest import world_config

    out = tmp_path / "atlas"
    report = run_pipeline(world_config(n_items=6), out, progress=silent_progress,
                          stages=["sample", "generate", "internal", "build"])
    assert report.ran == ["sample", "generate", "build"]
    assert rows(out, "SELECT count(*) FROM internal_features") == [(0,)]
    assert rows(out, "SELECT count(*) FROM atlas_info WHERE key = 'internal'") == [(0,)]
