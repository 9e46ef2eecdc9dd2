"""Datapoints: real/generated pairs ranked by their datapoint score, and one pair in detail.

Seed 001, section 4.4 and appendix D.4: per pair (x, x') the score is the L2 norm of
the difference of their concept energy vectors, ||xi(x') - xi(x)||_2. The lowest
scores are memorization candidates (the generated image repeats a template); the
highest are divergences (prompt ambiguity, omission, or a genuine blindspot).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from backend.atlas import Atlas, NotFound
from backend.query import USER_LABELS, resolve_model, url, user_label_params, view_context

TOP_CONCEPTS = 10


class End(StrEnum):
    memorization = "memorization"  # lowest score first
    divergence = "divergence"      # highest score first


_ORDER = {End.memorization: "d.l2 ASC", End.divergence: "d.l2 DESC"}


def datapoint_rows(atlas: Atlas, model: str, end: End, offset: int, limit: int) -> list[dict[str, Any]]:
    return atlas.rows(f"""
        SELECT row_number() OVER (ORDER BY {_ORDER[end]}, i.position) AS rank, d.item_id, i.position, i.caption,
               d.l2, d.mean_sigmoid, r.path AS real_image, g.path AS generated_image, g.flag AS generated_flag
        FROM datapoints d JOIN items i USING (item_id)
        LEFT JOIN images r ON r.item_id = d.item_id AND r.source_id = 'real'
        LEFT JOIN images g ON g.item_id = d.item_id AND g.source_id = d.source_id
        WHERE d.source_id = ?
        ORDER BY {_ORDER[end]}, i.position LIMIT ? OFFSET ?""", [model, limit, offset])


def datapoints_data(atlas: Atlas, model: str | None = None, end: End = End.memorization, offset: int = 0,
                    limit: int = 24) -> dict[str, Any]:
    """One page of a generator's pairs from the memorization end or the divergence end of the score."""
    context = view_context(atlas)
    model = resolve_model(atlas, model, context["models"])
    total, rows = 0, []
    if context["analysed"] and model is not None:
        total = atlas.rows("SELECT count(*) AS n FROM datapoints WHERE source_id = ?", [model])[0]["n"]
        rows = datapoint_rows(atlas, model, end, offset, limit) if offset < total else []
    state = {"model": model, "end": end}
    previous = max(min(offset, total) - limit, 0) if offset > 0 else None  # past the end: the last page
    following = offset + limit if offset + limit < total else None
    return {
        **context, "model": model, "end": end, "ends": list(End), "offset": offset, "limit": limit, "total": total,
        "rows": rows,
        "links": {
            "page": url("/datapoints", {**state, "offset": offset or None, "limit": limit}),
            "json": url("/api/datapoints", {**state, "offset": offset or None, "limit": limit}),
            "previous": url("/datapoints", {**state, "offset": previous or None, "limit": limit})
            if previous is not None else None,
            "next": url("/datapoints", {**state, "offset": following, "limit": limit}) if following else None,
        },
    }


def pair_concepts(atlas: Atlas, item_id: str, model: str, top: int = TOP_CONCEPTS,
                  labels: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """The concepts with the most energy in the real image or in the generated image of a pair.

    Each row carries both energies (0 where the concept is silent), the concept's delta under
    ``model`` and its rank on each side, so the page can list the top of either side.
    """
    return atlas.rows(f"""
        WITH {USER_LABELS}, pair AS (
            SELECT concept,
                   coalesce(max(energy) FILTER (WHERE source_id = 'real'), 0) AS real_energy,
                   coalesce(max(energy) FILTER (WHERE source_id = ?), 0) AS generated_energy
            FROM energies WHERE image_id IN (?, ?) GROUP BY concept)
        SELECT p.concept, coalesce(u.label, c.label) AS label, c.world_concept, p.real_energy, p.generated_energy,
               s.delta, s.suppressed, s.exaggerated,
               row_number() OVER (ORDER BY p.real_energy DESC, p.concept) AS real_rank,
               row_number() OVER (ORDER BY p.generated_energy DESC, p.concept) AS generated_rank
        FROM pair p JOIN concepts c USING (concept) LEFT JOIN user_labels u ON u.concept = p.concept
        LEFT JOIN concept_stats s ON s.source_id = ? AND s.concept = p.concept
        QUALIFY (real_rank <= ? AND p.real_energy > 0) OR (generated_rank <= ? AND p.generated_energy > 0)
        ORDER BY p.concept""", [*user_label_params(labels), model, f"real/{item_id}", f"{model}/{item_id}", model,
                                 top, top])


def pair_data(atlas: Atlas, item_id: str, model: str | None = None,
              labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    """One pair: the caption, the real and generated images, its score and rank, the top concepts of each side."""
    context = view_context(atlas)
    model = resolve_model(atlas, model, context["models"])
    items = atlas.rows("SELECT item_id, position, caption FROM items WHERE item_id = ?", [item_id])
    if not items:
        raise NotFound(f"no pair {item_id!r} in this atlas")
    images = {r["source_id"]: r for r in atlas.rows(
        "SELECT source_id, path, flag FROM images WHERE item_id = ? AND source_id IN ('real', ?)", [item_id, model])}
    score, concepts = None, []
    if context["analysed"] and model is not None:
        scored = atlas.rows("""
            SELECT d.l2, d.mean_sigmoid,
                   (SELECT count(*) FROM datapoints o WHERE o.source_id = d.source_id AND o.l2 < d.l2) + 1 AS rank,
                   (SELECT count(*) FROM datapoints o WHERE o.source_id = d.source_id) AS total
            FROM datapoints d WHERE d.source_id = ? AND d.item_id = ?""", [model, item_id])
        score = scored[0] if scored else None
        concepts = pair_concepts(atlas, item_id, model, labels=labels)
    real_side = sorted((c for c in concepts if c["real_energy"] > 0 and c["real_rank"] <= TOP_CONCEPTS),
                       key=lambda c: c["real_rank"])
    generated_side = sorted((c for c in concepts if c["generated_energy"] > 0 and c["generated_rank"] <= TOP_CONCEPTS),
                            key=lambda c: c["generated_rank"])
    return {
        **context, "model": model, **items[0],
        "real_image": images.get("real", {}).get("path"),
        "generated_image": images.get(model, {}).get("path") if model else None,
        "generated_flag": images.get(model, {}).get("flag") if model else None,
        "score": score, "real_concepts": real_side, "generated_concepts": generated_side,
        "links": {"page": url(f"/pairs/{quote(item_id)}", {"model": model}),
                  "json": url(f"/api/pairs/{quote(item_id)}", {"model": model}),
                  "datapoints": url("/datapoints", {"model": model})},
    }
