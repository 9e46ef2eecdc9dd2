"""Fixtures shared by the view tests: a client of the app over the lens atlas, and the atlas file itself."""

from __future__ import annotations

import duckdb
import pytest

from tests.app.charts import app_client


@pytest.fixture(scope="module")
def client(lens_atlas, tmp_path_factory):
    """A client over the lens atlas, one per test module (a module may define its own ``client`` instead)."""
    with app_client(lens_atlas, tmp_path_factory) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def atlas_db(lens_atlas):
    """The lens atlas's database, read-only, to check what the views show against."""
    db = duckdb.connect(str(lens_atlas / "atlas.duckdb"), read_only=True)
    yield db
    db.close()
