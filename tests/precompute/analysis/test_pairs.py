"""A generator that draws only some items is compared on those pairs, never on images it did not make."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from precompute.config import parse_config
from precompute.pipeline import run_pipeline
from tests.conftest import silent_progress


@pytest.fixture(scope="module")
def subset_atlas(world_output_sae, tmp_path_factory):
    config = parse_config({
        "run": {"name": "pairs", "n_items": 60},
        "source": {"kind": "world", "seed": 4, "size": 64},
        "generators": [{"name": "all", "kind": "planted", "seed": 1},
                       {"name": "first", "kind": "planted", "seed": 1, "n_items": 25}],
        "encode": {"energy_model": "world", "sae": str(world_output_sae), "device": "cpu", "batch_size": 30},
        "analysis": {"bootstrap": 0, "temperature": 0.5},
    })
    out = tmp_path_factory.mktemp("pairs") / "atlas"
    run_pipeline(config, out, progress=silent_progress,
                 stages=["sample", "generate", "train", "encode", "analyze", "build"])
    db = duckdb.connect(str(out / "atlas.duckdb"), read_only=True)
    yield db
    db.close()


def test_a_generator_draws_only_its_first_items(subset_atlas):
    counts = dict(subset_atlas.execute("SELECT source_id, n_images FROM sources").fetchall())
    assert counts == {"real": 60, "all": 60, "first": 25}
    positions = subset_atlas.execute("""SELECT max(i.position) FROM images g JOIN items i USING (item_id)
                                        WHERE g.source_id = 'first'""").fetchone()[0]
    assert positions == 24
    pairs = dict(subset_atlas.execute("SELECT source_id, n_pairs FROM source_summary").fetchall())
    assert pairs == {"all": 60, "first": 25}
    assert subset_atlas.execute("SELECT count(*) FROM datapoints WHERE source_id = 'first'").fetchone()[0] == 25


def test_the_statistics_pair_the_real_images_of_the_drawn_items(subset_atlas):
    """E_real of the subset generator is the mean over its 25 real counterparts; same seed, same images:
    its generated side equals the full generator's on those items."""
    rows = subset_atlas.execute("""
        SELECT s.concept, s.e_real, s.e_gen, f.e_gen AS e_gen_all FROM concept_stats s
        JOIN concept_stats f ON f.concept = s.concept AND f.source_id = 'all' WHERE s.source_id = 'first'""").fetchall()
    expected = dict(subset_atlas.execute("""
        SELECT e.concept, sum(e.energy) / 25 FROM energies e JOIN images i USING (image_id)
        JOIN items t ON t.item_id = i.item_id WHERE e.source_id = 'real' AND t.position < 25 GROUP BY 1""").fetchall())
    generated = dict(subset_atlas.execute("""
        SELECT e.concept, sum(e.energy) / 25 FROM energies e WHERE e.source_id = 'first' GROUP BY 1""").fetchall())
    for concept, e_real, e_gen, _ in rows:
        assert e_real == pytest.approx(expected.get(concept, 0.0), rel=1e-5, abs=1e-6)
        assert e_gen == pytest.approx(generated.get(concept, 0.0), rel=1e-5, abs=1e-6)
    assert np.isfinite([r[1] for r in rows]).all()
