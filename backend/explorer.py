"""The explorer's read side: the UMAP point payload, concept search, neighbours, co-occurrence edges, selections.

One ``Explorer`` per app holds the read-only atlas, the user label store and the
concept card index (``backend/views/concept_index.py``), and caches the point payloads (an atlas never changes
under a running server). User labels win over automatic ones everywhere: they join
every query as a parameterised ``user_labels`` table.

The point payload (``points``) is one little-endian binary blob, so 32,000 concepts
cost 384 KB instead of megabytes of JSON::

    header (24 bytes): magic b"BSPT" | uint32 version (1) | uint32 n | uint32 colour index (COLOUR_KEYS)
                       | float32 domain low | float32 domain high
    body (12 n bytes): float32 umap_x, umap_y, value for concept 0, 1, ..., n - 1

``value`` is NaN where it does not exist (a dead concept, a concept without an
attributed internal feature); the domain is the colour scale's range.
"""

from __future__ import annotations

import gzip
import struct
import threading
from typing import Any, Literal

import numpy as np

from backend.atlas import Atlas, NotFound
from backend.kdindex import kd_order
from backend.labels import LabelStore
from backend.query import USER_LABELS, BadQuery, analysis_settings, generators, resolve_model, user_label_params
from backend.views.concept_index import LazyCardIndex, cooccurring

PAYLOAD_MAGIC = b"BSPT"
PAYLOAD_VERSION = 1
PAYLOAD_HEADER = struct.Struct("<4sIIIff")

# colour key -> (SQL expression over concept_stats s / minority m, fixed domain or None for [0, max], legend text)
COLOURS: dict[str, tuple[str, tuple[float, float] | None, str]] = {
    "delta": ("s.delta", (0.0, 1.0), "delta: suppressed (0) to exaggerated (1)"),
    "relative_delta": ("s.relative_delta", (-1.0, 1.0), "relative delta (E_gen - E_real) / (E_gen + E_real)"),
    "frequency": ("s.nu_real", None, "frequency: share of real images where the concept fires"),
    "frequency_gen": ("s.nu_gen", None, "frequency in the model's images"),
    "minority": ("m.minority", (0.0, 1.0), "minority score of the concept's most attributed internal feature"),
}
COLOUR_KEYS = tuple(COLOURS)
Colour = Literal["delta", "relative_delta", "frequency", "frequency_gen", "minority"]
Size = Literal["uniform", "frequency", "extremity"]
SIZES: dict[str, str] = {
    "uniform": "uniform",
    "frequency": "by frequency in real images",
    "extremity": "by |delta - 0.5|",
}
Order = Literal["asc", "desc"]
MAX_QUERY = 200  # characters of a label search
MAP_NEIGHBOURS = 8  # a typical concept lists about this many neighbours at the default radius
MAX_RADIUS = 0.3  # the radius slider's end

_NOT_ANALYSED = "this atlas has no concept analysis yet: build it with the train, encode and analyze stages"


class Explorer:
    """Queries of the explorer over one opened atlas."""

    def __init__(self, atlas: Atlas, labels: LabelStore):
        self.atlas = atlas
        self.labels = labels
        self._payloads: dict[tuple[str, str], bytes] = {}
        self._compressed: dict[tuple[str, str], bytes] = {}
        self._layout_order: tuple[bytes, bytes] | None = None
        self._lock = threading.Lock()
        self.tables = {r["table_name"] for r in atlas.rows("SELECT table_name FROM duckdb_tables()")}
        # analysed, and with concepts to show (a lens of no live concept leaves nothing to draw)
        self.analysed = atlas.analysed() and bool(atlas.rows("SELECT 1 FROM concepts LIMIT 1"))
        self.n_concepts = atlas.rows("SELECT count(*) AS n FROM concepts")[0]["n"] if self.analysed else 0
        self._models = generators(atlas)  # the atlas never changes under a running server
        self.analysis = analysis_settings(atlas)  # temperature and blindspot thresholds of the build
        self.attributed = {r["source_id"] for r in atlas.rows("SELECT DISTINCT source_id FROM attributions")} \
            if "attributions" in self.tables else set()
        self.cards = LazyCardIndex(atlas, self.n_concepts)
        self.default_radius = self._typical_radius() if self.analysed else 0.05

    # -- parameters ------------------------------------------------------------------

    def models(self) -> list[str]:
        """Every generator of the atlas (the sources other than ``real``)."""
        return list(self._models)

    def model(self, requested: str | None) -> str:
        """``requested`` if it is a generator of this atlas (else NotFound), the first one when none is asked."""
        model = resolve_model(self.atlas, requested, self._models)
        if model is None:
            raise NotFound("this atlas has no generators")
        return model

    def colours(self, model: str) -> list[str]:
        """The colour keys with data for ``model``: minority only when the internal lens attributed concepts."""
        keys = [k for k in COLOUR_KEYS if k != "minority"]
        if "internal_features" in self.tables and model in self.attributed:
            keys.append("minority")
        return keys

    def require_analysis(self) -> None:
        if not self.analysed:
            raise NotFound(_NOT_ANALYSED)

    def check_concept(self, concept: int) -> None:
        self.require_analysis()
        if not 0 <= concept < self.n_concepts:
            raise NotFound(f"no concept {concept}: this atlas has concepts 0 to {self.n_concepts - 1}")

    def _user_labels(self) -> list[Any]:
        return user_label_params(self.labels.all())

    # -- the scatter -----------------------------------------------------------------

    def points(self, model: str, colour: str) -> bytes:
        """The binary point payload of ``model`` coloured by ``colour`` (layout in the module docstring)."""
        self.require_analysis()
        if colour not in self.colours(model):
            raise BadQuery(f"colour must be one of {self.colours(model)} for model {model!r}, got {colour!r}")
        key = (model, colour)
        with self._lock:
            cached = self._payloads.get(key)
        if cached is not None:
            return cached
        expression, domain, _ = COLOURS[colour]
        minority = ("LEFT JOIN (SELECT a.concept, max(f.minority) AS minority FROM attributions a "
                    "JOIN internal_features f ON f.source_id = a.source_id AND f.feature = a.feature "
                    "WHERE a.source_id = ? AND a.rank = 0 GROUP BY a.concept) m ON m.concept = c.concept"
                    if colour == "minority" else "")
        params = [model, model] if colour == "minority" else [model]
        rows = self.atlas.rows(f"""
            SELECT c.concept, c.umap_x, c.umap_y, CASE WHEN c.is_dead THEN NULL ELSE {expression} END AS value
            FROM concepts c LEFT JOIN concept_stats s ON s.concept = c.concept AND s.source_id = ?
            {minority} ORDER BY c.concept""", params)
        if [r["concept"] for r in rows] != list(range(len(rows))):
            raise NotFound("the atlas' concept ids are not 0..n-1; rebuild it")
        body = np.array([(r["umap_x"], r["umap_y"], np.nan if r["value"] is None else r["value"]) for r in rows],
                        dtype="<f4").reshape(len(rows), 3)
        if domain is None:
            values = body[:, 2][np.isfinite(body[:, 2])]
            domain = (0.0, float(values.max()) if values.size and values.max() > 0 else 1.0)
        payload = PAYLOAD_HEADER.pack(PAYLOAD_MAGIC, PAYLOAD_VERSION, len(rows), COLOUR_KEYS.index(colour),
                                      *domain) + body.tobytes()
        with self._lock:
            self._payloads[key] = payload
        return payload

    def points_gzip(self, model: str, colour: str) -> bytes:
        """``points`` gzip-compressed, once per payload: the server sends it as is (``Content-Encoding: gzip``)
        instead of compressing 384 KB again on every request (about 50 ms of CPU at 32,000 concepts)."""
        key = (model, colour)
        with self._lock:
            cached = self._compressed.get(key)
        if cached is None:
            cached = gzip.compress(self.points(model, colour), compresslevel=6, mtime=0)
            with self._lock:
                self._compressed[key] = cached
        return cached

    def layout_order(self) -> tuple[bytes, bytes]:
        """The map's points in the order of the scatter's spatial index (``backend.kdindex``), little-endian
        uint32 per concept, raw and gzip-compressed; one layout for every model, sorted once."""
        self.require_analysis()
        with self._lock:
            cached = self._layout_order
        if cached is None:
            layout = self.atlas.arrow("SELECT umap_x, umap_y FROM concepts ORDER BY concept")
            order = kd_order(layout.column("umap_x").to_numpy(), layout.column("umap_y").to_numpy()).astype("<u4")
            cached = (order.tobytes(), gzip.compress(order.tobytes(), compresslevel=6, mtime=0))
            with self._lock:
                self._layout_order = cached
        return cached

    def brief(self, concept: int, model: str) -> dict[str, Any]:
        """What the scatter's tooltip shows: id, label (the user's first), delta and its significance."""
        self.check_concept(concept)
        index = self.cards.get()
        stats = index.stats.get(model)
        return {"concept": concept, "label": self.labels.get(concept) or index.labels[concept],
                "delta": float(stats["delta"][concept]) if stats else None,
                "significant": bool(stats["significant"][concept]) if stats else None}

    def search(self, text: str, model: str, limit: int = 20) -> list[dict[str, Any]]:
        """Concepts whose label (the user's, else the automatic one) or world concept contains ``text``;
        ``#12`` (or ``12``) also finds concept 12, listed first."""
        self.require_analysis()
        text = text.strip()
        if len(text) > MAX_QUERY:
            raise BadQuery(f"a search is at most {MAX_QUERY} characters, got {len(text)}")
        if not text:
            return []
        digits = text.removeprefix("#")
        wanted_id = int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 10 else -1
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self.atlas.rows(f"""WITH {USER_LABELS}
            SELECT c.concept, coalesce(u.label, c.label) AS label, c.world_concept, s.delta
            FROM concepts c LEFT JOIN user_labels u ON u.concept = c.concept
            LEFT JOIN concept_stats s ON s.concept = c.concept AND s.source_id = ?
            WHERE c.concept = ? OR coalesce(u.label, c.label) ILIKE ? ESCAPE '\\'
                  OR coalesce(c.world_concept, '') ILIKE ? ESCAPE '\\'
            ORDER BY c.concept <> ?, c.is_dead, c.concept LIMIT ?""",
                               [*self._user_labels(), model, wanted_id, pattern, pattern, wanted_id, limit])

    def _typical_radius(self) -> float:
        """The neighbour radius a concept opens with: the median, over live concepts, of the distance to their
        ``MAP_NEIGHBOURS``-th nearest live concept on the map, as a share of its extent, rounded up to the
        slider's 0.01 steps. A fixed 0.05 listed no neighbour at all on a 64-concept map and thousands on a
        32,000-concept one; this lists about ``MAP_NEIGHBOURS`` for a typical concept of any map."""
        from scipy.spatial import cKDTree

        layout = self.atlas.arrow("SELECT umap_x, umap_y FROM concepts WHERE NOT is_dead")
        xy = np.column_stack([layout.column("umap_x").to_numpy(), layout.column("umap_y").to_numpy()]).astype(float)
        if len(xy) <= MAP_NEIGHBOURS:
            return MAX_RADIUS
        side = max(float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1])), 1e-12)
        distance, _ = cKDTree(xy).query(xy, k=MAP_NEIGHBOURS + 1)  # the first is the concept itself
        typical = float(np.median(distance[:, -1])) / side
        return float(min(max(np.ceil(typical * 100) / 100, 0.01), MAX_RADIUS))

    def neighbours(self, concept: int, radius: float, model: str, limit: int = 50) -> list[dict[str, Any]]:
        """Concepts within ``radius`` of ``concept`` on the UMAP, nearest first.

        ``radius`` is a share of the layout's extent (the larger side of its bounding box),
        so 0.05 means "within 5% of the map" whatever the UMAP's units.
        """
        self.check_concept(concept)
        return self.atlas.rows(f"""WITH {USER_LABELS},
            extent AS (SELECT greatest(max(umap_x) - min(umap_x), max(umap_y) - min(umap_y), 1e-12) AS side
                       FROM concepts),
            me AS (SELECT umap_x, umap_y FROM concepts WHERE concept = ?),
            near AS (SELECT c.concept, sqrt((c.umap_x - me.umap_x) ** 2 + (c.umap_y - me.umap_y) ** 2) / extent.side
                            AS distance
                     FROM concepts c, me, extent WHERE c.concept <> ?)
            SELECT n.concept, n.distance, coalesce(u.label, c.label) AS label, s.delta
            FROM near n JOIN concepts c ON c.concept = n.concept LEFT JOIN user_labels u ON u.concept = n.concept
            LEFT JOIN concept_stats s ON s.concept = n.concept AND s.source_id = ?
            WHERE n.distance <= ? ORDER BY n.distance, n.concept LIMIT ?""",
                              [*self._user_labels(), concept, concept, model, radius, limit])

    def edges(self, concept: int, model: str, top: int = 8) -> dict[str, list[dict[str, Any]]]:
        """The concepts that fire with ``concept`` on the same tokens, in the real images (``real``) and in
        ``model``'s (``generated``): the top of its row of Z^T Z as a cosine (``concept_partners``)."""
        self.check_concept(concept)
        return cooccurring(self.cards.get(), self.labels.all(), concept, model, top)

    def selection(self, ids: list[int], model: str, order: str = "asc", limit: int = 500) -> dict[str, Any]:
        """A ranking of the selected concepts by delta (``asc``: most suppressed first)."""
        self.require_analysis()
        unknown = [i for i in ids if not 0 <= i < self.n_concepts]
        if unknown:
            raise BadQuery(f"selected ids must be concepts 0 to {self.n_concepts - 1}; "
                               f"{len(unknown)} are not, e.g. {unknown[:5]}")
        direction = "ASC" if order == "asc" else "DESC"
        rows = self.atlas.rows(f"""WITH {USER_LABELS}
            SELECT c.concept, coalesce(u.label, c.label) AS label, s.delta, s.ci_low, s.ci_high, s.significant,
                   s.relative_delta, s.nu_real, s.nu_gen
            FROM concepts c LEFT JOIN user_labels u ON u.concept = c.concept
            JOIN concept_stats s ON s.concept = c.concept AND s.source_id = ?
            WHERE c.concept IN (SELECT unnest(?::INTEGER[]))
            ORDER BY s.delta {direction}, c.concept LIMIT ?""",
                               [*self._user_labels(), model, sorted(set(ids)), limit])
        return {"model": model, "order": order, "count": len(set(ids)), "concepts": rows}
