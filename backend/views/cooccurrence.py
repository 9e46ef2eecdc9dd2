"""The spectral view of concept co-occurrence (seed 001, appendix H and D.5).

Z^T Z over token codes is the adjacency of a weighted graph over concepts, one per
image set. Shown: its l0 after thresholding at epsilon for every set (Fig. 19, left),
the eigenvalue spectra on log-log axes (Fig. 20), and the |cosine| between the top
eigenvectors of the real matrix and of one generator's (Fig. 21: the identity would
mean the same principal concept axes; off-diagonal mass means rotated ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backend import svg
from backend.atlas import Atlas
from backend.query import resolve_model, url, view_context

NOISE_FLOOR = 1e-12  # eigenvalues below this share of the largest are round-off, not spectrum


def l0_curves(atlas: Atlas) -> dict[str, dict[str, list[float]]]:
    rows = atlas.rows("""SELECT source_id, list(epsilon ORDER BY epsilon) AS epsilon, list(l0 ORDER BY epsilon) AS l0
                         FROM cooccurrence_l0 GROUP BY source_id ORDER BY source_id != 'real', source_id""")
    return {r["source_id"]: {"epsilon": r["epsilon"], "l0": r["l0"]} for r in rows}


def spectra(atlas: Atlas) -> dict[str, dict[str, list[float]]]:
    """Eigenvalues per set in descending order; ``rank`` counts from 1 (the x axis of a log-log plot)."""
    rows = atlas.rows("""SELECT source_id, list(rank + 1 ORDER BY rank) AS rank,
                                list(eigenvalue ORDER BY rank) AS eigenvalue
                         FROM cooccurrence_spectrum GROUP BY source_id ORDER BY source_id != 'real', source_id""")
    return {r["source_id"]: {"rank": r["rank"], "eigenvalue": r["eigenvalue"]} for r in rows}


def alignment_matrix(atlas: Atlas, model: str) -> np.ndarray:
    """|cos| between real eigenvector i (rows) and generated eigenvector j (columns); NaN where not stored."""
    rows = atlas.rows("""SELECT list(real_rank) AS i, list(gen_rank) AS j, list(cosine) AS cosine
                         FROM eigenvector_alignment WHERE source_id = ?""", [model])
    if not rows or not rows[0]["i"]:
        return np.zeros((0, 0))
    i, j = np.asarray(rows[0]["i"], dtype=int), np.asarray(rows[0]["j"], dtype=int)
    matrix = np.full((i.max() + 1, j.max() + 1), np.nan)
    matrix[i, j] = rows[0]["cosine"]
    return matrix


def cooccurrence_data(atlas: Atlas, model: str | None = None) -> dict[str, Any]:
    """The co-occurrence curves of every set and the eigenvector alignment of one generator with the real set."""
    context = view_context(atlas)
    model = resolve_model(atlas, model, context["models"])
    data: dict[str, Any] = {**context, "model": model, "l0": {}, "spectra": {}, "alignment": [],
                            "diagonal_mean": None, "diagonal_mean_top10": None,
                            "links": {"page": url("/cooccurrence", {"model": model}),
                                      "json": url("/api/cooccurrence", {"model": model})}}
    if not context["analysed"] or model is None:
        return data
    matrix = alignment_matrix(atlas, model)
    diagonal = np.diagonal(matrix) if matrix.size else np.zeros(0)
    data.update(l0=l0_curves(atlas), spectra=spectra(atlas),
                alignment=[[None if np.isnan(v) else float(v) for v in row] for row in matrix],
                diagonal_mean=float(np.nanmean(diagonal)) if diagonal.size else None,
                diagonal_mean_top10=float(np.nanmean(diagonal[:10])) if diagonal.size else None)
    return data


def _above_noise(rank: list[float], eigenvalue: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The eigenvalues a log axis can show: those above the float64 noise floor of the largest one.

    Z^T Z is positive semi-definite; eigenvalues of a rank-deficient matrix come out of the
    solver as tiny positive or negative round-off (1e-30 where the top one is 1e-2), which
    would stretch a log axis over decades that carry no information.
    """
    ranks, values = np.asarray(rank, dtype=float), np.asarray(eigenvalue, dtype=float)
    floor = NOISE_FLOOR * (values.max() if values.size else 0.0)
    keep = values > floor
    return ranks[keep], values[keep]


def cooccurrence_charts(data: dict[str, Any]) -> dict[str, Any]:
    if not data["l0"] and not data["spectra"]:
        return {}
    l0 = svg.lines({name: (c["epsilon"], c["l0"]) for name, c in data["l0"].items()}, x_log=True,
                   emphasise=data["model"], x_label="threshold epsilon", y_label="l0 of Z^T Z (entries above epsilon)",
                   title="Sparsity of co-occurrence")
    spectrum = svg.lines({name: _above_noise(s["rank"], s["eigenvalue"]) for name, s in data["spectra"].items()},
                         x_log=True,
                         y_log=True, emphasise=data["model"], x_label="rank", y_label="eigenvalue",
                         title="Eigen-spectra of Z^T Z")
    matrix = np.array([[np.nan if v is None else v for v in row] for row in data["alignment"]], dtype=float)
    alignment = (svg.heatmap(matrix, low=0.0, high=1.0, x_label=f"eigenvector of {data['model']}",
                             y_label="eigenvector of real",
                             title=f"|cosine| of top eigenvectors: real vs {data['model']}")
                 if matrix.size else None)
    return {"l0": l0, "spectrum": spectrum, "alignment": alignment}
