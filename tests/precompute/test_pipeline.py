"""The pipeline end to end on the embedded world: stages, resume, skips, the atlas."""

from __future__ import annotations

import json
from contextlib import contextmanager

import duckdb
import pytest
from PIL import Image

from precompute.atlas.writer import ATLAS_DB
from precompute.config import parse_config
from precompute.errors import AtlasError, ConfigError, DataError
from precompute.pipeline import atlas_is_current, parse_stages, run_pipeline
from tests.conftest import BASIC_STAGES, build_atlas, silent_progress, world_config


def query(atlas, sql, params=()):
    with duckdb.connect(str(atlas / ATLAS_DB), read_only=True) as db:
        return db.execute(sql, list(params)).fetchall()


def test_world_atlas_holds_every_source_image_and_truth(world_atlas):
    assert query(world_atlas, "SELECT source_id, kind, n_images FROM sources ORDER BY source_id") == [
        ("plain", "planted", 40), ("planted-a", "planted", 40), ("real", "real", 40)]
    assert query(world_atlas, "SELECT count(*) FROM items")[0][0] == 40
    for (path,) in query(world_atlas, "SELECT path FROM images"):
        with Image.open(world_atlas / path) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    # Ground truth: the planted effects are stored and visible in the annotations.
    assert query(world_atlas, "SELECT concept, effect, rate FROM planted_effects WHERE source_id = 'planted-a' "
                              "ORDER BY concept") == [("shadow", "add", 1.0), ("star", "suppress", 1.0)]
    per_source = dict(query(world_atlas, "SELECT source_id, count(*) FROM world_annotations "
                                         "WHERE concept = 'shadow' GROUP BY source_id"))
    assert per_source["planted-a"] == 40  # shadow added at rate 1.0
    assert query(world_atlas, "SELECT count(*) FROM world_annotations WHERE source_id = 'planted-a' "
                              "AND concept = 'star'")[0][0] == 0
    assert query(world_atlas, "SELECT count(*) FROM world_concepts")[0][0] >= 40


def test_every_stage_leaves_a_manifest_with_versions_and_counts(world_atlas):
    manifests = {(s, t): json.loads(m) for s, t, m in query(world_atlas, "SELECT * FROM manifests")}
    assert {("sample", "real"), ("generate", "planted-a"), ("generate", "plain")} <= set(manifests)
    sample = manifests[("sample", "real")]
    assert sample["counts"]["items"] == 40 and sample["versions"]["torch"] and sample["seconds"] >= 0
    assert sample["config"]["source"]["kind"] == "world"


def test_killed_run_resumes_to_the_same_atlas(tmp_path):
    config = world_config(n_items=50)
    clean = build_atlas(tmp_path / "clean", config, shard_size=10)

    calls = {"n": 0}

    @contextmanager
    def dying_progress(total, description, unit):
        def advance(n=1):
            calls["n"] += n
            if description.startswith("generate") and calls["n"] > 75:
                raise KeyboardInterrupt("killed")
        yield advance

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, resumed, progress=dying_progress, shard_size=10, stages=BASIC_STAGES)
    assert not resumed.exists()  # nothing published by a killed run
    run_pipeline(config, resumed, progress=silent_progress, shard_size=10, stages=BASIC_STAGES)
    sql = "SELECT image_id, path FROM images ORDER BY image_id"
    assert query(clean, sql) == query(resumed, sql)
    for _, path in query(clean, sql):
        assert (clean / path).read_bytes() == (resumed / path).read_bytes()
    annotations = "SELECT image_id, concept FROM world_annotations ORDER BY ALL"
    assert query(clean, annotations) == query(resumed, annotations)


def test_atlas_is_current_only_for_its_own_config(tmp_path):
    config = world_config(n_items=5)
    out = build_atlas(tmp_path / "atlas", config)
    assert atlas_is_current(out, config)
    assert not atlas_is_current(out, world_config(n_items=6))
    assert not atlas_is_current(tmp_path / "nowhere", config)
    import duckdb  # an atlas an older version wrote (another schema) is rebuilt even from the same config

    with duckdb.connect(str(out / "atlas.duckdb")) as db:
        db.execute("UPDATE atlas_info SET value = '1' WHERE key = 'schema_version'")
    assert not atlas_is_current(out, config)


def test_a_folder_of_bad_files_is_skipped_by_reason_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (20, 10), (200, 10, 10)).save(folder / f"{name}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.png").write_bytes(b"this is not an image")
    lines = [
        {"file": "a.png", "caption": "a red thing"},
        {"file": "b.png", "caption": "   "},
        {"file": "empty.png", "caption": "nothing"},
        {"file": "junk.png", "caption": "junk"},
        {"file": "missing.png", "caption": "gone"},
        {"file": "c.png", "caption": "another red thing"},
        {"file": "c.png", "caption": "the same file again"},
    ]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = parse_config({"run": {"n_items": 100}, "source": {"kind": "folder", "path": str(folder)}})
    report = run_pipeline(config, tmp_path / "atlas", progress=silent_progress, stages=BASIC_STAGES)
    sample = report.manifests[0]
    assert sample["counts"]["items"] == 2
    assert sample["skipped"] == {"empty-caption": 1, "empty-file": 1, "undecodable": 1, "missing-file": 1,
                                 "duplicate-id": 1}
    assert "ran out" in " ".join(sample["notes"])
    rows = query(tmp_path / "atlas", "SELECT reason, count(*) FROM skipped GROUP BY reason ORDER BY reason")
    assert dict(rows) == sample["skipped"]


def test_a_source_with_nothing_usable_is_an_error(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "captions.csv").write_text("file,caption\nmissing.png,gone\n")
    config = parse_config({"source": {"kind": "folder", "path": str(folder)}})
    with pytest.raises(DataError, match="no usable item"):
        run_pipeline(config, tmp_path / "atlas", progress=silent_progress, stages=BASIC_STAGES)


def test_build_without_sample_is_refused(tmp_path):
    with pytest.raises(AtlasError, match="sample stage has not run"):
        run_pipeline(world_config(n_items=5), tmp_path / "atlas", stages=["build"], progress=silent_progress)


def test_stage_selection_is_validated():
    assert parse_stages("build,sample") == ["sample", "build"]
    with pytest.raises(ConfigError, match="unknown stage"):
        parse_stages("sample,paint")
