"""The concept card's tables, held in memory: a card is then a few array lookups, no query.

A DuckDB point query costs about half a millisecond from Python, and a card needs a
dozen (its statistics in every model, histograms, exemplars with their images and
captions, heatmaps, co-occurrence partners, decoder neighbours). Under 20 concurrent
clients that alone kept the card far above 100 ms. The atlas never changes under a
running server, and the analyze stage has already ranked and binned everything a card
shows (``concept_partners``, ``concept_neighbours``, ``energy_histograms``), so the
server reads those tables once into arrays indexed by concept: at 32,000 concepts and
10,000 pairs in five image sets, 56 MB of arrays (the process grows by about 270 MB with
Python's objects and DuckDB's page cache), read in about a second.
User labels are not here: they change, and the card reads them from the label store.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.atlas import Atlas

log = logging.getLogger(__name__)

STAT_COLUMNS = ("e_real", "e_gen", "delta", "relative_delta", "nu_real", "nu_gen", "suppressed", "exaggerated",
                "suppressed_paper", "exaggerated_paper", "q_value", "ci_low", "ci_high", "significant")


@dataclass(frozen=True)
class Ranked:
    """(K, top) ids (-1 where absent) and their scores."""

    ids: np.ndarray
    scores: np.ndarray

    def row(self, concept: int) -> list[tuple[int, float]]:
        ids, scores = self.ids[concept], self.scores[concept]
        keep = ids >= 0
        return list(zip(ids[keep].tolist(), scores[keep].tolist()))


def _ranked(atlas: Atlas, sql: str, params: list[Any], n_concepts: int, id_column: str,
            score_column: str) -> Ranked:
    table = atlas.arrow(sql, params)
    concept = table.column("concept").to_numpy()
    rank = table.column("rank").to_numpy()
    top = int(rank.max()) + 1 if rank.size else 0
    ids = np.full((n_concepts, top), -1, dtype=np.int32)
    scores = np.zeros((n_concepts, top), dtype=np.float32)
    ids[concept, rank] = table.column(id_column).to_numpy()
    scores[concept, rank] = table.column(score_column).to_numpy()
    return Ranked(ids, scores)


class CardIndex:
    """Every per-concept row the card shows, as arrays (see the module docstring)."""

    def __init__(self, atlas: Atlas, n_concepts: int):
        k = self.n_concepts = n_concepts
        sources = atlas.rows("SELECT source_id, n_images FROM sources ORDER BY source_id")
        self.sources = [r["source_id"] for r in sources]
        self.source_index = {s: i for i, s in enumerate(self.sources)}
        self.n_images = {r["source_id"]: r["n_images"] for r in sources}

        concepts = atlas.arrow("""SELECT concept, label, label_source, label_auroc, caption_words, caption_auroc,
                                         vlm_label, world_concept, world_auroc, umap_x, umap_y, is_dead, energy_max
                                  FROM concepts ORDER BY concept""")
        self.concepts = {name: concepts.column(name).to_pylist() for name in concepts.column_names}
        self.labels: list[str] = self.concepts["label"]
        self.energy_max = concepts.column("energy_max").to_numpy()

        self.stats: dict[str, dict[str, np.ndarray]] = {}
        stats = atlas.arrow(f"SELECT source_id, concept, {', '.join(STAT_COLUMNS)} FROM concept_stats "
                            "ORDER BY source_id, concept")
        source = stats.column("source_id").to_numpy(zero_copy_only=False)
        for model in np.unique(source):
            rows = np.flatnonzero(source == model)
            self.stats[str(model)] = {c: stats.column(c).to_numpy(zero_copy_only=False)[rows] for c in STAT_COLUMNS}

        self.histograms: dict[str, np.ndarray] = {}
        histograms = atlas.arrow("SELECT source_id, concept, counts FROM energy_histograms")
        source = histograms.column("source_id").to_numpy(zero_copy_only=False)
        concept = histograms.column("concept").to_numpy()
        counts = histograms.column("counts").combine_chunks()
        bins = counts.type.list_size
        flat = counts.flatten().to_numpy().reshape(-1, bins)
        for s in self.sources:
            grid = np.zeros((k, bins), dtype=np.int32)
            rows = source == s
            grid[concept[rows]] = flat[rows]
            self.histograms[s] = grid

        self.neighbours = _ranked(atlas, "SELECT concept, rank, neighbour, cosine FROM concept_neighbours", [], k,
                                  "neighbour", "cosine")
        self.partners = {s: _ranked(atlas, "SELECT concept, rank, partner, weight FROM concept_partners "
                                           "WHERE source_id = ?", [s], k, "partner", "weight")
                         for s in self.sources}

        items = atlas.arrow("SELECT item_id, caption FROM items ORDER BY position")
        self.item_ids: list[str] = items.column("item_id").to_pylist()
        self.captions: list[str] = items.column("caption").to_pylist()
        # per source, the image path of every item position (None where the source has no image of it)
        self.paths: dict[str, list[str | None]] = {}
        for s in self.sources:
            images = atlas.arrow("SELECT i.position, im.path FROM images im JOIN items i USING (item_id) "
                                 "WHERE im.source_id = ?", [s])
            paths = np.full(len(self.item_ids), None, dtype=object)
            paths[images.column("position").to_numpy()] = images.column("path").to_pylist()
            self.paths[s] = paths.tolist()

        # exemplars: per source, (K, ranks) item positions (-1 where absent) and scores
        self.exemplars = {s: _ranked(atlas, """SELECT e.concept, e.rank, i.position AS item, e.score FROM exemplars e
                                             JOIN items i USING (item_id) WHERE e.source_id = ?""", [s], k,
                                     "item", "score")
                          for s in self.sources}

        # heatmaps: which (source, concept, item) has one, and the concept's energy on that image
        heatmaps = atlas.arrow("""SELECT list_position(?::VARCHAR[], h.source_id) - 1 AS source, h.concept,
                                         i.position AS item, h.energy
                                  FROM heatmaps h JOIN items i USING (item_id)""", [self.sources])
        keys = self._key(heatmaps.column("source").to_numpy(), heatmaps.column("concept").to_numpy(),
                         heatmaps.column("item").to_numpy())
        order = np.argsort(keys, kind="stable")
        self._heat_keys = keys[order]
        self._heat_energy = heatmaps.column("energy").to_numpy()[order]

    def _key(self, source: Any, concept: Any, item: Any) -> Any:
        return (np.asarray(source, dtype=np.int64) * self.n_concepts + concept) * max(len(self.item_ids), 1) + item

    def heatmap(self, source_id: str, concept: int, item: int) -> float | None:
        """The concept's energy on the image when the atlas has its heatmap there, else None."""
        key = self._key(self.source_index[source_id], concept, item)
        at = int(np.searchsorted(self._heat_keys, key))
        if at < self._heat_keys.size and self._heat_keys[at] == key:
            return float(self._heat_energy[at])
        return None


class LazyCardIndex:
    """A ``CardIndex`` built on first use (or ahead of it, in a thread, by ``warm``), once."""

    def __init__(self, atlas: Atlas, n_concepts: int):
        self._atlas, self._n_concepts = atlas, n_concepts
        self._index: CardIndex | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._index is not None

    def get(self) -> CardIndex:
        with self._lock:
            if self._index is None:
                self._index = CardIndex(self._atlas, self._n_concepts)
            return self._index

    def warm(self) -> threading.Thread:
        """Read the index in a background thread; a failure is logged, and the first card request retries it
        and answers with the error."""
        def read() -> None:
            try:
                self.get()
            except Exception:
                log.exception("reading the concept card tables failed")

        thread = threading.Thread(target=read, name="card-index", daemon=True)
        thread.start()
        return thread


def card_label(index: CardIndex, users: dict[int, str], concept: int) -> str:
    """A concept's label on a card: the user's own, else the atlas's."""
    return users.get(concept) or index.labels[concept]


def cooccurring(index: CardIndex, users: dict[int, str], concept: int, model: str,
                top: int = 10) -> dict[str, list[dict[str, Any]]]:
    """The concept's top co-occurrence partners in the real images and in ``model``'s (``concept_partners``)."""
    return {side: [{"concept": c, "weight": w, "label": card_label(index, users, c)}
                   for c, w in index.partners[source].row(concept)[:top]]
            for side, source in (("real", "real"), ("generated", model))}
