"""Activation examples per quantile band: evenly spaced samples of each band of a concept's firing images."""

from __future__ import annotations

import duckdb
import numpy as np

from precompute.analysis.examples import add_activation_examples
from precompute.atlas.schema import TABLES


def atlas_with(energies: dict[tuple[str, int], list[float]]) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.execute(TABLES["energies"])
    db.execute(TABLES["activation_examples"])
    rows = [(f"{source}/item-{i:03d}", source, concept, value) for (source, concept), values in energies.items()
            for i, value in enumerate(values)]
    db.executemany("INSERT INTO energies VALUES (?, ?, ?, ?)", rows)
    return db


def test_each_band_keeps_evenly_spaced_images_of_its_quarter_of_the_ranking():
    energy = np.arange(100, 0, -1, dtype=float)  # item-000 has the highest energy (100), item-099 the lowest
    db = atlas_with({("real", 3): list(energy), ("gen", 3): [5.0, 4.0, 3.0]})
    assert add_activation_examples(db, bands=4, per_band=5) == 4 * 5 + 3
    rows = db.execute("SELECT band, rank, item_id, energy, quantile FROM activation_examples "
                      "WHERE source_id = 'real' ORDER BY band, rank").fetchall()
    for band in range(4):
        kept = [r for r in rows if r[0] == band]
        assert [r[1] for r in kept] == list(range(5))
        ranks = [int(r[2].split("-")[1]) for r in kept]  # rank of the image in the concept's energies
        assert ranks == [25 * band + offset for offset in (2, 7, 12, 17, 22)]  # spread over the band's 25 images
        assert [r[3] for r in kept] == sorted((r[3] for r in kept), reverse=True)
        assert all(band / 4 <= r[4] < (band + 1) / 4 for r in kept)
    # a concept that fires on 3 images: each is kept once, in the band its rank falls in
    few = db.execute("SELECT band, item_id, energy FROM activation_examples WHERE source_id = 'gen' "
                     "ORDER BY energy DESC").fetchall()
    assert [(b, e) for b, _, e in few] == [(0, 5.0), (1, 4.0), (2, 3.0)]


def test_energies_of_zero_are_no_examples():
    db = atlas_with({("real", 0): [0.0, 2.0, 0.0, 1.0]})
    add_activation_examples(db, bands=2, per_band=3)
    assert db.execute("SELECT item_id FROM activation_examples ORDER BY band").fetchall() == [("item-001",),
                                                                                              ("item-003",)]
