"""The concept card: everything the atlas knows about one output-lens concept, for one selected model.

Seed 001 appendix C: "each concept has a card with key statistics, representative real
and generated images (x, x'), and visualized co-occurrence patterns". The card adds the
paper's 2x2 (section 4.1: the best real image with its generated counterpart, the best
generated image with its real counterpart), the activation histogram real vs generated,
delta in every model, nearest concepts by decoder cosine, the internal features
attributed to the concept (when the internal lens ran) and the user's label.

Like Neuronpedia's feature pages, its activation examples are the top images of each
side with their captions and energies, and on demand (``activation_band``) images from
each lower quantile band of the concept's energies (``activation_examples``).
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np

from backend import svg
from backend.atlas import NotFound
from backend.explorer import Explorer
from backend.heatmaps import heat_png
from backend.query import BadQuery
from backend.views.concept_html import card_parts
from backend.views.concept_index import STAT_COLUMNS, CardIndex, card_label, cooccurring
from backend.views.internal import steer_proposal
from precompute.analysis.examples import BANDS



def heatmap_url(source_id: str, concept: int, item_id: str) -> str:
    return f"/api/heatmaps/{source_id}/{concept}/{item_id}.png"


def _image(index: CardIndex, concept: int, source_id: str, item: int) -> dict[str, Any]:
    """One image of the card: where it is, its caption, the concept's energy there and its heatmap URL."""
    item_id = index.item_ids[item]
    energy = index.heatmap(source_id, concept, item)
    path = index.paths[source_id][item]
    return {"source_id": source_id, "item_id": item_id, "path": path, "url": f"/{path}" if path else None,
            "caption": index.captions[item], "energy": energy or 0.0,
            "heatmap": heatmap_url(source_id, concept, item_id) if energy is not None else None}


def gallery(index: CardIndex, concept: int, model: str) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict]]]:
    """Seed 001's 2x2 and the exemplars of both sides.

    The 2x2 is ``real_best`` = [best real x, its generated x'] and ``generated_best`` =
    [best generated x', its real x]; a side is empty when the concept never fired on its images.
    """
    exemplars: dict[str, list[dict]] = {"real": [], "generated": []}
    quad: dict[str, list[dict[str, Any]]] = {"real_best": [], "generated_best": []}
    for side, source_id, key, other in (("real", "real", "real_best", model),
                                        ("generated", model, "generated_best", "real")):
        ranked = index.exemplars.get(source_id)
        if ranked is None:
            continue
        for item, score in ranked.row(concept):
            exemplars[side].append({**_image(index, concept, source_id, item), "score": score})
        if exemplars[side]:
            best = int(ranked.ids[concept, 0])
            quad[key] = [_image(index, concept, source_id, best), _image(index, concept, other, best)]
    return quad, exemplars


def energy_histogram(index: CardIndex, concept: int, model: str) -> dict[str, Any]:
    """The concept's per-image energies, real vs ``model``: shares of images per energy bin, and where it fires.

    The bins (analyze stage) split [0, the concept's largest energy on any image of the atlas].
    """
    counts = {side: index.histograms[side][concept] for side in ("real", model)}
    shares = {side: (c / max(index.n_images.get(side, 1), 1)) for side, c in counts.items()}
    edges = np.linspace(0.0, float(index.energy_max[concept]), counts["real"].size + 1)
    return {"edges": edges.tolist(), "real": shares["real"].tolist(), "generated": shares[model].tolist(),
            "fires": {"real": float(shares["real"].sum()), "generated": float(shares[model].sum())}}


def _nearest(index: CardIndex, users: dict[int, str], concept: int) -> dict[str, Any]:
    return {"concepts": [{"concept": c, "cosine": cosine, "label": card_label(index, users, c)}
                         for c, cosine in index.neighbours.row(concept)]}


def _attributions(explorer: Explorer, concept: int, model: str, top: int = 8) -> dict[str, Any] | None:
    """The internal features most attributed to the concept (internal lens), or None when it did not run."""
    if model not in explorer.attributed:
        return None
    feature_info = "internal_features" in explorer.tables
    columns = "f.label AS feature_label, f.minority, f.kept" if feature_info else \
        "'' AS feature_label, NULL AS minority, NULL AS kept"
    join = "LEFT JOIN internal_features f ON f.source_id = a.source_id AND f.feature = a.feature" if feature_info else ""
    features = explorer.atlas.rows(f"""
        SELECT a.rank, a.feature, a.score, {columns} FROM attributions a {join}
        WHERE a.source_id = ? AND a.concept = ? ORDER BY a.rank LIMIT ?""", [model, concept, top])
    proposal = steer_proposal(explorer.atlas, model, concept)  # what "steer with these" steers, or why nothing
    return {"features": features, "probe": proposal["probe"], "steer_url": proposal["steer_url"],
            "steer_refused": proposal["refused"], "steer_mode": proposal["mode"], "probe_floor": proposal["floor"]}


def concept_card(explorer: Explorer, concept: int, model: str) -> dict[str, Any]:
    """The card's data (the page, the htmx fragment and ``/api/concepts/{id}`` all render this)."""
    explorer.check_concept(concept)
    index = explorer.cards.get()
    if model not in index.stats:
        raise NotFound(f"no statistics of concept {concept} for model {model!r}")
    info = {name: values[concept] for name, values in index.concepts.items()}
    users = explorer.labels.all()
    user_label = users.get(concept)
    deltas = [{"source_id": m, **{c: _plain(v[c][concept]) for c in STAT_COLUMNS}} for m, v in index.stats.items()]
    quad, exemplars = gallery(index, concept, model)
    return {
        **{k: v for k, v in info.items() if k not in ("label", "energy_max")},
        "automatic_label": info["label"],
        "label": user_label or info["label"],
        "user_label": user_label,
        "model": model,
        "models": explorer.models(),
        "stats": next(d for d in deltas if d["source_id"] == model),
        "deltas": deltas,
        "quad": quad,
        "exemplars": exemplars,
        "histogram": energy_histogram(index, concept, model),
        "cooccurring": cooccurring(index, users, concept, model),
        "nearest": _nearest(index, users, concept),
        "attributions": _attributions(explorer, concept, model),
        "bands": BANDS,
        "thresholds": explorer.analysis,
    }


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON and templates expect (NaN, a value not computed, as None)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _label_state(explorer: Explorer, concept: int) -> dict[str, Any]:
    """What the card's label block shows: the label, the user's own if any, and the automatic one."""
    stored = explorer.labels.get(concept)
    automatic = explorer.atlas.rows("SELECT label FROM concepts WHERE concept = ?", [concept])[0]["label"]
    return {"concept": concept, "label": stored or automatic, "user_label": stored, "automatic_label": automatic}


def set_label(explorer: Explorer, concept: int, text: str) -> dict[str, Any]:
    """Store the user's label of ``concept`` (a bad one raises ``LabelError`` and the old label stays); return
    what the card now shows."""
    explorer.check_concept(concept)
    explorer.labels.set(concept, text)
    return _label_state(explorer, concept)


def remove_label(explorer: Explorer, concept: int) -> dict[str, Any]:
    """Drop the user's label of ``concept``, so the automatic label shows again."""
    explorer.check_concept(concept)
    explorer.labels.remove(concept)
    return _label_state(explorer, concept)


def activation_band(explorer: Explorer, concept: int, model: str, side: str, band: int) -> dict[str, Any]:
    """The images of one quantile band of the concept's energies on the real images (``side="real"``) or on
    ``model``'s (``"generated"``): band 0 is the top quarter of the images where it fires, band 3 the bottom
    one, each image with its caption and the concept's energy there."""
    explorer.check_concept(concept)
    if side not in ("real", "generated"):
        raise BadQuery(f"side is 'real' or 'generated', got {side!r}")
    if not 0 <= band < BANDS:
        raise BadQuery(f"band is 0 (the top quarter of the firing images) to {BANDS - 1}, got {band}")
    source = "real" if side == "real" else model
    images = explorer.atlas.rows("""
        SELECT a.rank, a.item_id, a.energy, a.quantile, i.caption, im.path
        FROM activation_examples a JOIN items i USING (item_id)
        LEFT JOIN images im ON im.item_id = a.item_id AND im.source_id = a.source_id
        WHERE a.source_id = ? AND a.concept = ? AND a.band = ? ORDER BY a.rank""", [source, concept, band])
    for image in images:
        image.update(source_id=source, url=f"/{image['path']}" if image["path"] else None, heatmap=None)
    return {"concept": concept, "model": model, "side": side, "source_id": source, "band": band, "bands": BANDS,
            "from_share": band / BANDS, "to_share": (band + 1) / BANDS, "images": images,
            "next_band": band + 1 if band + 1 < BANDS else None}


def heatmap_png(explorer: Explorer, source_id: str, concept: int, item_id: str) -> bytes:
    """The concept's token map on one exemplar as an RGBA PNG of the patch grid (the browser scales it up)."""
    explorer.check_concept(concept)
    found = explorer.atlas.rows("SELECT grid_rows, grid_cols, heatmap FROM heatmaps "
                                "WHERE source_id = ? AND concept = ? AND item_id = ?", [source_id, concept, item_id])
    if not found:
        raise NotFound(f"no heatmap of concept {concept} on {source_id}/{item_id}")
    return heat_png(found[0])


def card_page_data(card: dict[str, Any]) -> dict[str, Any]:
    """The card plus its server-rendered parts: the activation histogram (an SVG) and the repeated ones."""
    histogram = card["histogram"]
    percent = {"real": [100 * v for v in histogram["real"]], card["model"]: [100 * v for v in histogram["generated"]]}
    chart = svg.histogram(histogram["edges"], percent, x_label="energy (sum of codes over the image's tokens)",
                          y_label="% of images", title="activation where the concept fires")
    return {"card": card, "histogram_svg": chart, "parts": card_parts(card)}
