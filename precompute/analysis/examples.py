"""Activation examples below the top: images sampled from each quantile band of a concept's energies.

The exemplars of the encode stage are only the top images of a concept, which shows what
it fires on most and hides what its weaker activations look like. Neuronpedia's feature
pages show, under the top activations, samples from lower activation intervals; the
concept card does the same from ``activation_examples``.

Per image set and concept, the images where the concept fires are ranked by energy
(highest first) and split into ``BANDS`` bands of equal count (band 0: the top quarter
of the firing images, band 3: the bottom quarter); from each band ``PER_BAND`` images are
kept, evenly spaced in rank, so a band's samples span its energies. One SQL statement
over the atlas's ``energies`` table (windowed ranks, no Python loop): at most
``BANDS * PER_BAND`` rows per (set, concept).
"""

from __future__ import annotations

import duckdb

BANDS = 4
PER_BAND = 6

# Band b holds ranks [ceil(b n / B), ceil((b + 1) n / B)) of a concept's n firing images; within a band of
# `span` ranks the kept ones are the offsets t = floor((2j + 1) span / 2P), j = 0..P-1 (every rank when
# span <= P). For an offset t the only candidate is j = ceil((2 P t - span) / (2 span)), written without
# negative operands as (2 P t + 3 span - 1) // (2 span) - 1.
_SQL = """
INSERT INTO activation_examples
WITH ranked AS (
    SELECT source_id, concept, substr(image_id, length(source_id) + 2) AS item_id, energy,
           row_number() OVER (PARTITION BY source_id, concept ORDER BY energy DESC, image_id) - 1 AS r,
           count(*) OVER (PARTITION BY source_id, concept) AS n
    FROM energies WHERE energy > 0),
banded AS (
    SELECT *, r * $bands // n AS band FROM ranked),
spans AS (
    SELECT *, (band * n + $bands - 1) // $bands AS start,
           ((band + 1) * n + $bands - 1) // $bands - (band * n + $bands - 1) // $bands AS span
    FROM banded),
candidates AS (
    SELECT *, (2 * $per * (r - start) + 3 * span - 1) // (2 * span) - 1 AS j FROM spans),
kept AS (
    SELECT * FROM candidates
    WHERE span <= $per OR (j < $per AND (2 * j + 1) * span // (2 * $per) = r - start))
SELECT source_id, concept, band::TINYINT,
       (row_number() OVER (PARTITION BY source_id, concept, band ORDER BY r) - 1)::SMALLINT AS rank,
       item_id, energy, (r + 0.5) / n AS quantile
FROM kept
"""


def add_activation_examples(db: duckdb.DuckDBPyConnection, bands: int = BANDS, per_band: int = PER_BAND) -> int:
    """Fill ``activation_examples`` from ``energies`` of the atlas being built; return the rows written."""
    db.execute(_SQL, {"bands": bands, "per": per_band})
    return db.execute("SELECT count(*) FROM activation_examples").fetchone()[0]
