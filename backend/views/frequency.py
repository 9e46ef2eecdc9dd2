"""Frequency vs delta: are rare concepts the blindspots? (seed 001, section 4.6 and appendix D.3).

The paper plots each concept's empirical frequency in the real images (x) against its
energy difference passed through a sigmoid twice as sharp as delta's (T = 0.4 beside the
paper's 0.8; here T / 2 of the atlas's own T) (y), point size proportional to the
frequency; that is the default here (``delta_sharp``), with the atlas's own delta as the
alternative. The correlation
the paper describes is between frequency and the size of the misalignment, reported
as Spearman's rho of frequency against |y - 0.5|.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import numpy as np
from scipy.stats import spearmanr

from backend import svg
from backend.atlas import Atlas, NotFound
from backend.query import USER_LABELS, analysis_settings, resolve_model, url, user_label_params, view_context
from precompute.analysis.delta import FREQUENCY_SHARPENING


class FrequencyY(StrEnum):
    delta_sharp = "delta_sharp"  # sigmoid((E_gen - E_real) / (T / 2)): the paper's Fig. 11 (T / 2 = 0.4 at 0.8)
    delta = "delta"              # the atlas's delta at its temperature


class AxisScale(StrEnum):
    linear = "linear"
    log = "log"


_Y_COLUMN = {FrequencyY.delta_sharp: "s.delta_sharp", FrequencyY.delta: "s.delta"}


def temperature(data: dict[str, Any]) -> float:
    """The temperature of the chosen y axis: the sharper T / 2 of the paper's Fig. 11 (0.4 at its T = 0.8), or the
    atlas's own delta's T."""
    own = data["analysis"]["temperature"]
    return own / FREQUENCY_SHARPENING if data["y"] == FrequencyY.delta_sharp else own


def frequency_data(atlas: Atlas, model: str | None = None, y: FrequencyY = FrequencyY.delta_sharp,
                   scale: AxisScale = AxisScale.linear, labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Per live concept: frequency in real images and generated images, and the chosen energy difference."""
    context = view_context(atlas)
    model = resolve_model(atlas, model, context["models"])
    data: dict[str, Any] = {
        **context, "model": model, "y": y, "scale": scale, "ys": list(FrequencyY), "scales": list(AxisScale),
        "concepts": {"concept": [], "label": [], "nu_real": [], "nu_gen": [], "value": []},
        "n_real_images": None, "spearman": None, "n_never_real": 0, "analysis": analysis_settings(atlas),
        "links": {"page": url("/frequency", {"model": model, "y": y, "scale": scale}),
                  "json": url("/api/frequency", {"model": model, "y": y, "scale": scale})},
    }
    data["temperature"] = temperature(data)
    if not context["analysed"] or model is None:
        return data
    rows = atlas.rows(f"""
        WITH {USER_LABELS}
        SELECT list(s.concept ORDER BY s.concept) AS concept,
               list(coalesce(u.label, c.label) ORDER BY s.concept) AS label,
               list(s.nu_real ORDER BY s.concept) AS nu_real, list(s.nu_gen ORDER BY s.concept) AS nu_gen,
               list({_Y_COLUMN[y]} ORDER BY s.concept) AS value
        FROM concept_stats s JOIN concepts c USING (concept) LEFT JOIN user_labels u ON u.concept = s.concept
        WHERE s.source_id = ? AND NOT c.is_dead""", [*user_label_params(labels), model])
    columns = {key: rows[0][key] or [] for key in data["concepts"]}
    nu_real, value = np.asarray(columns["nu_real"], dtype=float), np.asarray(columns["value"], dtype=float)
    data["concepts"] = columns
    data["n_real_images"] = atlas.rows("SELECT n_images FROM sources WHERE source_id = 'real'")[0]["n_images"]
    data["n_never_real"] = int((nu_real <= 0).sum())
    if nu_real.size > 2 and np.ptp(nu_real) > 0 and np.ptp(np.abs(value - 0.5)) > 0:
        data["spearman"] = float(spearmanr(nu_real, np.abs(value - 0.5)).statistic)
    return data


def frequency_chart(data: dict[str, Any]) -> Any:
    concepts = data["concepts"]
    if not concepts["concept"]:
        return None
    nu_real = np.asarray(concepts["nu_real"], dtype=float)
    top = float(nu_real.max()) if nu_real.size and nu_real.max() > 0 else 1.0
    sizes = 1.2 + 4.8 * np.sqrt(np.clip(nu_real, 0, None) / top)  # area proportional to frequency
    titles = ([f"#{c} {label}: frequency {f:.3f}, {data['y']} {v:.3f}"
               for c, label, f, v in zip(concepts["concept"], concepts["label"], nu_real, concepts["value"])]
              if nu_real.size <= svg.DETAIL_POINTS else None)  # large scatters carry no tooltips
    log = data["scale"] == AxisScale.log
    thresholds = data["analysis"]
    guides = ((0.5,) if data["y"] == FrequencyY.delta_sharp  # the neutral line; and delta's blindspot thresholds
              else (thresholds["suppressed_below"], 0.5, thresholds["exaggerated_above"]))
    y_label = (f"sigmoid((E_gen - E_real) / T), T = {data['temperature']:.3g}" if data["y"] == FrequencyY.delta_sharp
               else f"delta = sigmoid((E_gen - E_real) / T), T = {data['temperature']:.3g}")
    links = ([f"/concepts/{c}?model={quote(data['model'], safe='')}" for c in concepts["concept"]]
             if titles is not None else None)  # each point opens its concept's card
    pick = url("/frequency/nearest", {"model": data["model"], "y": data["y"], "scale": data["scale"]})
    return svg.scatter(nu_real, concepts["value"], colour_values=concepts["value"], sizes=sizes, titles=titles,
                       links=links, pick_url=pick, x_log=log, x_domain=None if log else (0.0, 1.0), y_domain=(0.0, 1.0),
                       margin=0.03, guides_y=guides,
                       x_label="frequency in real images (share of images)", y_label=y_label,
                       title=f"{data['model']}: frequency vs energy difference", frame=svg.Frame(width=640, height=380))


def nearest_concept(atlas: Atlas, model: str | None, y: FrequencyY, scale: AxisScale, at_x: float,
                    at_y: float) -> tuple[int, str]:
    """The concept drawn nearest (at_x, at_y) on the frequency chart (a log frequency axis measured in decades
    over the chart's span), and the model: where a click goes when the chart is too large for a link per point."""
    data = frequency_data(atlas, model, y, scale)
    nu = np.asarray(data["concepts"]["nu_real"], dtype=float)
    value = np.asarray(data["concepts"]["value"], dtype=float)
    if scale == AxisScale.log:
        placed = nu > 0
        lx = np.log10(np.where(placed, nu, 1.0))
        span = float(np.ptp(lx[placed])) if placed.any() else 1.0
        dx = (lx - np.log10(max(at_x, 1e-12))) / (span or 1.0)
        distance = np.where(placed, dx ** 2 + (value - at_y) ** 2, np.inf)
    else:
        distance = (nu - at_x) ** 2 + (value - at_y) ** 2
    if not np.isfinite(distance).any():
        raise NotFound(f"no concept to pick on the frequency chart of {data['model']!r}")
    return int(data["concepts"]["concept"][int(np.argmin(distance))]), data["model"]
