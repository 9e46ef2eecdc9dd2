"""The atlas writer publishes atomically: a failed build leaves the previous atlas whole."""

import duckdb
import pytest

from precompute.atlas import writer
from precompute.atlas.schema import TABLES
from precompute.atlas.writer import ATLAS_DB, AtlasBuilder
from precompute.errors import AtlasError


def build(target, run_name):
    with AtlasBuilder(target) as atlas:
        atlas.set_info("run_name", run_name)
        atlas.commit()


def run_name(target):
    with duckdb.connect(str(target / ATLAS_DB), read_only=True) as db:
        return db.execute("SELECT value FROM atlas_info WHERE key = 'run_name'").fetchone()[0]


def test_builds_every_documented_table(tmp_path):
    build(tmp_path / "atlas", "first")
    with duckdb.connect(str(tmp_path / "atlas" / ATLAS_DB), read_only=True) as db:
        names = {row[0] for row in db.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(TABLES) <= names


def test_failed_build_keeps_the_previous_atlas_and_leaves_no_temp(tmp_path):
    target = tmp_path / "atlas"
    build(target, "first")
    with pytest.raises(RuntimeError):
        with AtlasBuilder(target) as atlas:
            atlas.set_info("run_name", "second")
            raise RuntimeError("killed mid-build")
    assert run_name(target) == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_half_written_atlas_is_never_visible(tmp_path):
    target = tmp_path / "atlas"
    with AtlasBuilder(target) as atlas:
        atlas.set_info("run_name", "only")
        assert not target.exists()  # still building: nothing at the target path
        atlas.commit()
    assert run_name(target) == "only"


@pytest.mark.parametrize("can_exchange", [True, False], ids=["exchange", "two renames"])
def test_rebuild_replaces_the_atlas(tmp_path, monkeypatch, can_exchange):
    if not can_exchange:  # a file system that cannot exchange two folders: the old one is moved aside first
        monkeypatch.setattr(writer, "exchange", lambda a, b: False)
    target = tmp_path / "atlas"
    build(target, "first")
    build(target, "second")
    assert run_name(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_refuses_to_replace_a_folder_that_is_not_an_atlas(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(AtlasError, match="not an atlas"):
        build(target, "x")
    assert (target / "holiday.jpg").read_bytes() == b"precious"
