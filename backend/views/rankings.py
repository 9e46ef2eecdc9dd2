"""Rankings of a generator's blindspots (seed 001, section 4.3 and appendix C's "global rankings").

Suppressed blindspots are concepts with delta below the atlas's threshold (0.1 by
default), exaggerated ones above the upper threshold (0.9), whose paired test survives
the false-discovery-rate control (and that clear the effect-size floor
``analysis.min_change`` where the atlas sets one): the ``suppressed`` / ``exaggerated`` flags
of ``concept_stats``. ``flags=paper`` ranks by the paper's thresholds alone instead.
Filters and sort orders come from fixed enums mapped to fixed SQL fragments; every
value reaches the database as a bound parameter.

Delta compares mean energies (how strongly a concept is present, summed over an
image's tokens), not how often it fires: a concept can fire on more generated images
than real ones and still be suppressed, because where it fires it fires weakly. Each
row carries both, and the evidence of the concept's automatic label (``label_auroc``,
``precompute.analysis.labels``), which can filter the ranking (``min_label_auroc``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backend.atlas import Atlas
from backend.query import (USER_LABELS, BadQuery, FlagRule, analysis_settings, resolve_model, url,
                           user_label_params, view_context)


class Direction(StrEnum):
    suppressed = "suppressed"
    exaggerated = "exaggerated"


class RankingSort(StrEnum):
    delta = "delta"                    # most extreme delta first
    relative_delta = "relative_delta"  # most extreme (E_gen - E_real) / (E_gen + E_real) first
    confidence = "confidence"          # the interval end nearest 0.5 furthest from it first
    frequency = "frequency"            # most frequent in real images first


_ORDER = {
    (RankingSort.delta, Direction.suppressed): "s.delta ASC",
    (RankingSort.delta, Direction.exaggerated): "s.delta DESC",
    (RankingSort.relative_delta, Direction.suppressed): "s.relative_delta ASC",
    (RankingSort.relative_delta, Direction.exaggerated): "s.relative_delta DESC",
    (RankingSort.confidence, Direction.suppressed): "s.ci_high ASC",
    (RankingSort.confidence, Direction.exaggerated): "s.ci_low DESC",
    (RankingSort.frequency, Direction.suppressed): "s.nu_real DESC",
    (RankingSort.frequency, Direction.exaggerated): "s.nu_real DESC",
}

# The exported columns, in order, with their Arrow types (CSV and Parquet carry the same rows as the JSON).
EXPORT_SCHEMA = pa.schema([
    ("rank", pa.int64()), ("concept", pa.int64()), ("label", pa.string()), ("world_concept", pa.string()),
    ("label_source", pa.string()), ("label_auroc", pa.float64()), ("user_label", pa.bool_()),
    ("delta", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("significant", pa.bool_()),
    ("q_value", pa.float64()),
    ("relative_delta", pa.float64()), ("e_real", pa.float64()), ("e_gen", pa.float64()),
    ("nu_real", pa.float64()), ("nu_gen", pa.float64()),
    ("real_exemplar", pa.string()), ("generated_exemplar", pa.string()),
])


@dataclass(frozen=True)
class RankingQuery:
    """The state of a rankings view; everything a link needs to reproduce it."""

    model: str | None = None
    direction: Direction = Direction.suppressed
    flags: FlagRule = FlagRule.atlas
    significant: bool = False
    min_freq: float = 0.0
    max_freq: float = 1.0
    sort: RankingSort = RankingSort.delta
    min_label_auroc: float = 0.0  # keep concepts whose automatic label scores at least this (0: no filter)

    def __post_init__(self) -> None:
        for name in ("min_freq", "max_freq"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BadQuery(f"{name} is a share of real images in [0, 1]; got {value}")
        if not 0.0 <= self.min_label_auroc <= 1.0:
            raise BadQuery(f"min_label_auroc is an AUROC in [0, 1]; got {self.min_label_auroc}")
        if self.min_freq > self.max_freq:
            raise BadQuery(f"min_freq ({self.min_freq}) must not exceed max_freq ({self.max_freq})")

    def state(self) -> dict[str, Any]:
        """The query parameters of this view, defaults left out (so links stay short)."""
        state: dict[str, Any] = {"model": self.model, "direction": self.direction, "sort": self.sort}
        if self.flags is not FlagRule.atlas:
            state["flags"] = self.flags
        if self.significant:
            state["significant"] = True
        if self.min_freq > 0.0:
            state["min_freq"] = self.min_freq
        if self.max_freq < 1.0:
            state["max_freq"] = self.max_freq
        if self.min_label_auroc > 0.0:
            state["min_label_auroc"] = self.min_label_auroc
        return state


def _where(query: RankingQuery, model: str) -> tuple[str, list[Any]]:
    sql = ("FROM concept_stats s JOIN concepts c USING (concept) LEFT JOIN user_labels u ON u.concept = s.concept "
           f"WHERE s.source_id = ? AND {query.flags.column(query.direction)} "
           "AND NOT c.is_dead AND (s.significant OR NOT ?) AND s.nu_real BETWEEN ? AND ? "
           "AND (? = 0 OR c.label_auroc >= ?)")
    return sql, [model, query.significant, query.min_freq, query.max_freq, query.min_label_auroc,
                 query.min_label_auroc]


def ranking_rows(atlas: Atlas, query: RankingQuery, model: str, offset: int = 0, limit: int | None = None,
                 labels: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """The ranked blindspots of ``model`` under ``query`` (all of them when ``limit`` is None).

    ``labels`` are the user's own concept labels; they replace the atlas's.
    """
    where, params = _where(query, model)
    page = "LIMIT ? OFFSET ?" if limit is not None else "OFFSET ?"
    page_params = [limit, offset] if limit is not None else [offset]
    order = _ORDER[query.sort, query.direction]
    # Rank and cut the page first, then look up the page's exemplars (a join per page, not per concept).
    return atlas.rows(f"""
        WITH {USER_LABELS}, ranked AS (
            SELECT row_number() OVER (ORDER BY {order}, s.concept) AS rank, s.source_id,
                   s.concept, coalesce(u.label, c.label) AS label, c.world_concept, c.label_source,
                   c.label_auroc, u.label IS NOT NULL AS user_label, s.delta, s.ci_low, s.ci_high, s.significant,
                   s.q_value,
                   s.relative_delta, s.e_real, s.e_gen, s.nu_real, s.nu_gen
            {where}
            ORDER BY {order}, s.concept {page})
        SELECT r.* EXCLUDE (source_id), ri.path AS real_exemplar, gi.path AS generated_exemplar
        FROM ranked r
        LEFT JOIN exemplars rx ON rx.source_id = 'real' AND rx.concept = r.concept AND rx.rank = 0
        LEFT JOIN images ri ON ri.item_id = rx.item_id AND ri.source_id = 'real'
        LEFT JOIN exemplars gx ON gx.source_id = r.source_id AND gx.concept = r.concept AND gx.rank = 0
        LEFT JOIN images gi ON gi.item_id = gx.item_id AND gi.source_id = r.source_id
        ORDER BY r.rank""", [*user_label_params(labels), *params, *page_params])


def ranking_count(atlas: Atlas, query: RankingQuery, model: str) -> int:
    where, params = _where(query, model)
    return atlas.rows(f"WITH {USER_LABELS} SELECT count(*) AS n {where}", [*user_label_params(None), *params])[0]["n"]


def rankings_data(atlas: Atlas, query: RankingQuery, offset: int = 0, limit: int = 50,
                  labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    """One page of a generator's ranked blindspots, with the links that page, extend and export it."""
    context = view_context(atlas)
    model = resolve_model(atlas, query.model, context["models"])
    rows: list[dict[str, Any]] = []
    total = 0
    if context["analysed"] and model is not None:
        total = ranking_count(atlas, query, model)
        rows = ranking_rows(atlas, query, model, offset, limit, labels) if offset < total else []
    state = {**query.state(), "model": model}
    next_offset = offset + limit if offset + limit < total else None
    return {
        **context, "model": model, "direction": query.direction, "significant": query.significant,
        "flags": query.flags, "flag_rules": list(FlagRule),
        "min_freq": query.min_freq, "max_freq": query.max_freq, "sort": query.sort,
        "min_label_auroc": query.min_label_auroc, "thresholds": analysis_settings(atlas),
        "directions": list(Direction), "sorts": list(RankingSort),
        "rows": rows, "total": total, "offset": offset, "limit": limit, "next_offset": next_offset,
        "links": {
            "page": url("/rankings", {**state, "offset": offset or None, "limit": limit}),
            "json": url("/api/rankings", {**state, "offset": offset or None, "limit": limit}),
            "more": url("/rankings/rows", {**state, "offset": next_offset, "limit": limit}) if next_offset else None,
            "next": url("/rankings", {**state, "offset": next_offset, "limit": limit}) if next_offset else None,
            # After "load more" the address shows every row on screen, so a reload reproduces the view.
            "more_push": url("/rankings", {**state, "limit": next_offset + limit}) if next_offset else None,
            "csv": url("/api/rankings.csv", state),
            "parquet": url("/api/rankings.parquet", state),
        },
    }


def export_rows(atlas: Atlas, query: RankingQuery,
                labels: Mapping[int, str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """Every row the query ranks (no paging), for the CSV and Parquet exports."""
    context = view_context(atlas)
    model = resolve_model(atlas, query.model, context["models"])
    if not context["analysed"] or model is None:
        return model, []
    return model, ranking_rows(atlas, query, model, labels=labels)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula (OWASP)


def spreadsheet_text(value: Any) -> Any:
    """A text cell that a spreadsheet shows as text: one starting like a formula gets a leading ``'`` (OWASP's
    CSV-injection rule). Numbers stay numbers; only text can carry a label someone else wrote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, text cells neutralised against formulas (the Parquet and JSON exports keep them as they are).

    Lines end in CRLF (RFC 4180): the csv module quotes a cell only for the characters of its line terminator, so
    with a bare LF a carriage return inside a cell would go out unquoted and split the row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_SCHEMA.names, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({name: spreadsheet_text(value) for name, value in row.items()} for row in rows)
    return buffer.getvalue()


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
