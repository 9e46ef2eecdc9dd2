"""The output lens end to end: a tiny random DINOv2 loaded from a folder, a trained SAE, the analyses."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from precompute.atlas.writer import ATLAS_DB
from precompute.errors import ConfigError
from precompute.pipeline import run_pipeline
from tests.conftest import LENS_ITEMS, lens_config, silent_progress



def rows(atlas, sql, params=()):
    with duckdb.connect(str(atlas / ATLAS_DB), read_only=True) as db:
        return db.execute(sql, list(params)).fetchall()


def test_delta_in_the_atlas_is_the_papers_formula_over_the_stored_energies(lens_atlas):
    temperature = float(rows(lens_atlas, "SELECT value FROM atlas_info WHERE key = 'temperature'")[0][0])
    recomputed = dict(rows(lens_atlas, f"""
        WITH sums AS (SELECT i.source_id, e.concept, sum(e.energy) / {LENS_ITEMS}.0 AS mean
                      FROM energies e JOIN images i USING (image_id) GROUP BY ALL)
        SELECT c.concept, 1 / (1 + exp(-(coalesce(g.mean, 0) - coalesce(r.mean, 0)) / ?))
        FROM concepts c LEFT JOIN sums g ON g.concept = c.concept AND g.source_id = 'planted'
        LEFT JOIN sums r ON r.concept = c.concept AND r.source_id = 'real'""", [temperature]))
    stored = dict(rows(lens_atlas, "SELECT concept, delta FROM concept_stats WHERE source_id = 'planted'"))
    # every concept of the lens is compared, and each stored delta has its recomputed twin
    assert len(stored) == 48 and set(recomputed) == set(stored)
    for concept, delta in recomputed.items():
        assert stored[concept] == pytest.approx(delta, rel=1e-4, abs=1e-9)
    # the paper's flags are the thresholds; the atlas's need the test too, so they are never looser
    flags = rows(lens_atlas, "SELECT count(*) FROM concept_stats WHERE suppressed_paper != (delta < 0.1) "
                             "OR exaggerated_paper != (delta > 0.9) OR (suppressed AND NOT suppressed_paper) "
                             "OR (exaggerated AND NOT exaggerated_paper) OR (suppressed != (suppressed_paper AND "
                             "coalesce(q_value <= 0.05, false))) OR ci_low > delta + 1e-9 OR ci_high < delta - 1e-9")
    assert flags == [(0,)]


def test_every_analysis_table_is_filled(lens_atlas):
    counts = {t: rows(lens_atlas, f"SELECT count(*) FROM {t}")[0][0] for t in (
        "concepts", "concept_stats", "delta_histograms", "source_summary", "model_correlations", "datapoints",
        "cooccurrence_l0", "cooccurrence_spectrum", "eigenvector_alignment", "exemplars", "heatmaps", "energies")}
    assert counts["concepts"] == 48 and counts["concept_stats"] == 2 * 48
    assert counts["delta_histograms"] == 2 * 100 and counts["datapoints"] == 2 * LENS_ITEMS
    assert counts["model_correlations"] == 4
    assert all(n > 0 for n in counts.values()), counts
    # one UMAP layout with finite coordinates, and labels for every concept
    layout = np.array(rows(lens_atlas, "SELECT umap_x, umap_y FROM concepts"))
    assert np.isfinite(layout).all() and layout.std(axis=0).min() > 0
    assert rows(lens_atlas, "SELECT count(*) FROM concepts WHERE label = ''") == [(0,)]


def test_exemplar_heatmaps_cover_the_patch_grid(lens_atlas):
    grid, size, scale = rows(lens_atlas, "SELECT grid_rows * grid_cols, octet_length(heatmap), scale FROM heatmaps "
                                         "LIMIT 1")[0]
    assert grid == 256 == size and scale > 0  # 224 / 14 = 16 x 16 patches
    best = rows(lens_atlas, """SELECT e.source_id, e.concept, e.item_id FROM exemplars e WHERE rank = 0""")
    with_maps = set(rows(lens_atlas, "SELECT source_id, concept, item_id FROM heatmaps"))
    assert set(best) <= with_maps
    # the 2x2: the best real exemplar's generated counterparts have maps too
    source, concept, item = next(b for b in best if b[0] == "real")
    assert ("planted", concept, item) in with_maps and ("same", concept, item) in with_maps


def test_an_sae_of_the_wrong_dimension_is_refused_before_encoding(tiny_dinov2, tmp_path):
    from precompute.sae import build_sae

    sae = build_sae("topk", input_dim=17, n_concepts=8, k=2)
    sae.save_pretrained(tmp_path / "sae")
    config = lens_config(tiny_dinov2, sae=str(tmp_path / "sae"))
    with pytest.raises(ConfigError, match="dimension 17.*dimension 32"):
        run_pipeline(config, tmp_path / "atlas", progress=silent_progress)


def test_stability_compares_two_seeds_without_touching_the_atlas(lens_atlas, tiny_dinov2, tmp_path):
    import shutil

    from precompute.evaluation import evaluate_stability

    out = tmp_path / "atlas"
    shutil.copytree(lens_atlas, out)
    shutil.copytree(lens_atlas.parent / f"{lens_atlas.name}.work", tmp_path / "atlas.work")
    before = (out / ATLAS_DB).read_bytes()
    results = evaluate_stability(lens_config(tiny_dinov2), out, seed=7, progress=silent_progress)
    assert set(results) == {"planted", "same"}
    for report in results.values():
        assert report["concepts"] == 48 and 0 <= report["matched"] <= 48
        assert -1 <= report["mean_best_cosine"] <= 1
    assert (out / ATLAS_DB).read_bytes() == before
    assert len(list((tmp_path / "atlas.work" / "analyze").iterdir())) == 2  # one folder per lens
