"""Opening an atlas verifies it whole: a truncated file, a missing table or a changed row count is refused, with
the file and the command that rebuilds it named; an intact atlas opens."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from backend.atlas import Atlas, DamagedAtlas
from precompute.atlas.schema import ROW_COUNTS, TABLES
from precompute.atlas.writer import ATLAS_DB


def truncate(path, share: float) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * share))


def drop_table(path, table: str = "world_concepts") -> None:
    with duckdb.connect(str(path)) as db:
        db.execute(f"DROP TABLE {table}")


def delete_a_row(path) -> None:
    with duckdb.connect(str(path)) as db:
        db.execute("DELETE FROM items WHERE position = (SELECT max(position) FROM items)")


DAMAGES = {
    "truncated to 50%": lambda path: truncate(path, 0.5),
    "truncated to 90%": lambda path: truncate(path, 0.9),
    "truncated by one byte": lambda path: truncate(path, 1 - 1 / path.stat().st_size),
    "a table missing": drop_table,
    "a row count that does not match": delete_a_row,
}
REASONS = {"truncated to 50%": "", "truncated to 90%": "truncated", "truncated by one byte": "truncated",
           "a table missing": "table world_concepts missing", "a row count that does not match": "items has 39 rows"}


@pytest.fixture
def copy(world_atlas, tmp_path):
    out = tmp_path / "atlas"
    shutil.copytree(world_atlas, out)
    return out


def test_an_intact_atlas_opens_and_its_build_recorded_every_table(copy):
    atlas = Atlas(copy)
    try:
        counts = json.loads(atlas.info()[ROW_COUNTS])
        assert set(counts) == set(TABLES) - {"atlas_info"}
        assert counts["items"] == 40 and counts["images"] == 120
    finally:
        atlas.close()


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_atlas_is_refused_naming_the_file_and_the_rebuild(copy, damage):
    DAMAGES[damage](copy / ATLAS_DB)
    with pytest.raises(DamagedAtlas) as refused:
        Atlas(copy)
    message = str(refused.value)
    assert str(copy / ATLAS_DB) in message and f"blindspot precompute CONFIG --out {copy}" in message
    assert REASONS[damage] in message
    assert "\n" not in message  # one line

