"""Model comparison: delta histograms, the cross-model Pearson matrix, delta of a vs b, datapoint-score histograms.

Follows seed 001: section 4.1 / appendix D.3 (log-scale histograms of delta, 100 bins
over [0, 1], with skewness), section 4.2 (Pearson r of delta between models, as a
matrix and as scatter plots) and section 4.5 (overlaid histograms of the datapoint
score ||xi(x') - xi(x)||_2 of two models, base vs fine-tune).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
from markupsafe import Markup

from backend import svg
from backend.atlas import Atlas, NotFound
from backend.query import USER_LABELS, resolve_model, url, user_label_params, view_context

DATAPOINT_BINS = 40


def delta_histograms(atlas: Atlas) -> dict[str, dict[str, Any]]:
    """Per generator: its delta histogram (bin edges, counts) and its summary (skewness, blindspot counts)."""
    rows = atlas.rows("""
        SELECT h.source_id, list(h.low ORDER BY h.bin) AS lows, max(h.high) AS high,
               list(h.count ORDER BY h.bin) AS counts,
               any_value(s.skewness) AS skewness, any_value(s.n_suppressed) AS n_suppressed,
               any_value(s.n_exaggerated) AS n_exaggerated, any_value(s.n_significant) AS n_significant
        FROM delta_histograms h LEFT JOIN source_summary s USING (source_id)
        GROUP BY h.source_id ORDER BY h.source_id""")
    return {r["source_id"]: {"edges": [*r["lows"], r["high"]], "counts": r["counts"], "skewness": r["skewness"],
                             "n_suppressed": r["n_suppressed"], "n_exaggerated": r["n_exaggerated"],
                             "n_significant": r["n_significant"]} for r in rows}


def pearson_matrix(atlas: Atlas, models: list[str]) -> list[list[float | None]]:
    """Pearson r of delta between every pair of ``models`` (rows and columns in that order; None where unknown)."""
    rows = atlas.rows("SELECT source_a, source_b, pearson FROM model_correlations")
    index = {m: i for i, m in enumerate(models)}
    matrix = np.full((len(models), len(models)), np.nan)
    pairs = [(index[r["source_a"]], index[r["source_b"]], r["pearson"]) for r in rows
             if r["source_a"] in index and r["source_b"] in index and r["pearson"] is not None]
    if pairs:
        i, j, r = (np.array(column) for column in zip(*pairs))
        matrix[i.astype(int), j.astype(int)] = r
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


def delta_pairs(atlas: Atlas, a: str, b: str, labels: Mapping[int, str] | None = None) -> dict[str, list[Any]]:
    """delta of every live concept under models a and b, as columns (user labels win over the atlas's)."""
    rows = atlas.rows(f"""
        WITH {USER_LABELS}
        SELECT list(sa.concept ORDER BY sa.concept) AS concept,
               list(coalesce(u.label, c.label) ORDER BY sa.concept) AS label,
               list(sa.delta ORDER BY sa.concept) AS a, list(sb.delta ORDER BY sa.concept) AS b
        FROM concept_stats sa JOIN concept_stats sb ON sb.concept = sa.concept AND sb.source_id = ?
        JOIN concepts c ON c.concept = sa.concept LEFT JOIN user_labels u ON u.concept = sa.concept
        WHERE sa.source_id = ? AND NOT c.is_dead""", [*user_label_params(labels), b, a])
    first = rows[0] if rows else {}
    return {key: first.get(key) or [] for key in ("concept", "label", "a", "b")}


def datapoint_histograms(atlas: Atlas, models: list[str], bins: int = DATAPOINT_BINS) -> dict[str, Any]:
    """Histograms of the datapoint score (l2) of ``models`` over shared bins, with each model's quartiles."""
    summary = atlas.rows("""
        SELECT source_id, count(*) AS n, min(l2) AS low, max(l2) AS high, median(l2) AS median,
               quantile_cont(l2, 0.25) AS q1, quantile_cont(l2, 0.75) AS q3
        FROM datapoints WHERE source_id IN (SELECT unnest(?)) GROUP BY source_id
        ORDER BY list_position(?, source_id)""", [models, models])
    if not summary:
        return {"edges": [], "counts": {}, "summary": {}}
    low, high = min(s["low"] for s in summary), max(s["high"] for s in summary)
    if high <= low:
        high = low + 1.0
    counted = atlas.rows("""
        SELECT source_id, least(greatest(floor((l2 - ?) / ? * ?), 0), ? - 1)::INTEGER AS bin, count(*) AS n
        FROM datapoints WHERE source_id IN (SELECT unnest(?)) GROUP BY ALL""", [low, high - low, bins, bins, models])
    present = [m for m in models if any(s["source_id"] == m for s in summary)]
    counts = np.zeros((len(present), bins), dtype=np.int64)
    if counted:
        row = {m: i for i, m in enumerate(present)}
        index = np.array([row[c["source_id"]] for c in counted])
        counts[index, np.array([c["bin"] for c in counted])] = np.array([c["n"] for c in counted])
    return {"edges": np.linspace(low, high, bins + 1).tolist(),
            "counts": {m: counts[i].tolist() for i, m in enumerate(present)},
            "summary": {s["source_id"]: {k: s[k] for k in ("n", "median", "q1", "q3")} for s in summary}}


def compare_data(atlas: Atlas, a: str | None = None, b: str | None = None,
                 labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Everything the comparison view shows for models a and b (defaults: the first generator, then another one)."""
    context = view_context(atlas)
    models = context["models"]
    a = resolve_model(atlas, a, models)
    b = resolve_model(atlas, b, models) if b else next((m for m in models if m != a), a)
    data: dict[str, Any] = {**context, "a": a, "b": b, "histograms": {}, "pearson": [], "pearson_ab": None,
                            "scatter": {"concept": [], "label": [], "a": [], "b": []},
                            "datapoints": {"edges": [], "counts": {}, "summary": {}},
                            "links": {"page": url("/compare", {"a": a, "b": b}),
                                      "json": url("/api/compare", {"a": a, "b": b})}}
    if not context["analysed"] or a is None:
        return data
    data["histograms"] = delta_histograms(atlas)
    data["pearson"] = pearson_matrix(atlas, models)
    data["pearson_ab"] = data["pearson"][models.index(a)][models.index(b)]
    data["scatter"] = delta_pairs(atlas, a, b, labels)
    data["datapoints"] = datapoint_histograms(atlas, list(dict.fromkeys([a, b])))
    return data


def compare_charts(data: dict[str, Any]) -> dict[str, Any]:
    """The comparison view's SVG charts, from ``compare_data``'s output."""
    if not data["histograms"]:
        return {}
    histograms = {model: svg.histogram(h["edges"], {model: h["counts"]}, log_y=True, x_label="delta",
                                       y_label="concepts (log scale)",
                                       title=f"{model}: skewness {_fmt(h['skewness'])}")
                  for model, h in data["histograms"].items()}
    models = data["models"]
    matrix = np.array([[np.nan if v is None else v for v in row] for row in data["pearson"]], dtype=float)
    pearson = svg.heatmap(matrix, low=-1.0, high=1.0, row_labels=models, col_labels=models, annotate=True,
                          title="Pearson r of delta between models", size=max(120, 60 * len(models)))
    scatter = data["scatter"]
    titles = ([f"#{c} {label}: {data['a']} {x:.3f}, {data['b']} {y:.3f}"
               for c, label, x, y in zip(scatter["concept"], scatter["label"], scatter["a"], scatter["b"])]
              if len(scatter["concept"]) <= svg.DETAIL_POINTS else None)  # large scatters carry no tooltips
    links = ([f"/concepts/{c}?model={quote(data['a'], safe='')}" for c in scatter["concept"]]
             if titles is not None else None)  # each point opens its concept's card
    pick = url("/compare/nearest", {"a": data["a"], "b": data["b"]})  # a click on a compact chart
    delta_scatter = svg.scatter(scatter["a"], scatter["b"], colour_values=scatter["a"], titles=titles, links=links,
                                pick_url=pick,
                                x_domain=(0.0, 1.0), y_domain=(0.0, 1.0), margin=0.03, diagonal=True,
                                x_label=f"delta, {data['a']}", y_label=f"delta, {data['b']}",
                                title=f"delta per concept: r = {_fmt(data['pearson_ab'])}",
                                frame=svg.Frame(width=420, height=400))
    points = data["datapoints"]
    datapoints = (svg.histogram(points["edges"], points["counts"], x_label="datapoint score ||xi(x') - xi(x)||_2",
                                y_label="pairs", title="datapoint scores") if points["counts"] else Markup(""))
    return {"histograms": histograms, "pearson": pearson, "scatter": delta_scatter, "datapoints": datapoints}


def nearest_concept(atlas: Atlas, a: str | None, b: str | None, at_x: float, at_y: float) -> tuple[int, str]:
    """The live concept whose (delta under a, delta under b) lies nearest (at_x, at_y), and model a: where a
    click on the delta scatter goes when the chart is too large to make each point a link."""
    context = view_context(atlas)
    a = resolve_model(atlas, a, context["models"])
    b = resolve_model(atlas, b, context["models"]) if b else next((m for m in context["models"] if m != a), a)
    if not context["analysed"] or a is None:
        raise NotFound("this atlas has no concept statistics to pick from")
    found = atlas.rows("""
        SELECT sa.concept FROM concept_stats sa JOIN concept_stats sb ON sb.concept = sa.concept AND sb.source_id = ?
        JOIN concepts c ON c.concept = sa.concept
        WHERE sa.source_id = ? AND NOT c.is_dead
        ORDER BY (sa.delta - ?) ** 2 + (sb.delta - ?) ** 2, sa.concept LIMIT 1""", [b, a, at_x, at_y])
    if not found:
        raise NotFound(f"no live concept under models {a!r} and {b!r}")
    return found[0]["concept"], a


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"
