"""The concept card: everything the atlas knows about one output-lens concept, for one selected model.

Seed 001 appendix C: "each concept has a card with key statistics, representative real
and generated images (x, x'), and visualized co-occurrence patterns". The card adds the
paper's 2x2 (section 4.1: the best real image with its generated counterpart, the best
generated image with its real counterpart), the activation histogram real vs generated,
delta in every model, nearest concepts by decoder cosine, the internal features
attributed to the concept (when the internal lens ran) and the user's label.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from backend.atlas import NotFound
from backend.explorer import Explorer

HISTOGRAM_BINS = 24
# Heatmap colours (inferno anchors); alpha follows the activation, so where the concept is absent the image shows.
HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=float)


def heatmap_url(source_id: str, concept: int, item_id: str) -> str:
    return f"/api/heatmaps/{source_id}/{concept}/{item_id}.png"


def _concept_energies(explorer: Explorer, concept: int, model: str) -> dict[str, dict[str, float]]:
    """The concept's non-zero energies on the real and ``model``'s images: source -> image id -> energy (one scan)."""
    energies: dict[str, dict[str, float]] = {"real": {}, model: {}}
    for row in explorer.atlas.rows("SELECT source_id, image_id, energy FROM energies "
                                   "WHERE concept = ? AND source_id IN ('real', ?)", [concept, model]):
        energies[row["source_id"]][row["image_id"]] = row["energy"]
    return energies


def _images(explorer: Explorer, concept: int, pairs: list[tuple[str, str]],
            energies: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """For (source, item) pairs, in order: image path, caption, the concept's energy there and its heatmap URL."""
    if not pairs:
        return []
    rows = explorer.atlas.rows("""
        WITH wanted AS (SELECT unnest(?::VARCHAR[]) AS source_id, unnest(?::VARCHAR[]) AS item_id,
                               unnest(?::INTEGER[]) AS slot)
        SELECT w.slot, w.source_id, w.item_id, i.image_id, i.path, t.caption, h.item_id IS NOT NULL AS has_heatmap
        FROM wanted w JOIN images i ON i.source_id = w.source_id AND i.item_id = w.item_id
        JOIN items t ON t.item_id = w.item_id
        LEFT JOIN heatmaps h ON h.source_id = w.source_id AND h.item_id = w.item_id AND h.concept = ?
        ORDER BY w.slot""", [[s for s, _ in pairs], [i for _, i in pairs], list(range(len(pairs))), concept])
    for row in rows:
        row["energy"] = energies.get(row["source_id"], {}).get(row.pop("image_id"), 0.0)
        row["url"] = "/" + row["path"]
        row["heatmap"] = heatmap_url(row["source_id"], concept, row["item_id"]) if row.pop("has_heatmap") else None
    return rows


def gallery(explorer: Explorer, concept: int, model: str,
            energies: dict[str, dict[str, float]]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict]]]:
    """Seed 001's 2x2 and the exemplars of both sides, from one exemplar query and one image query.

    The 2x2 is ``real_best`` = [best real x, its generated x'] and ``generated_best`` =
    [best generated x', its real x]; a side is empty when the concept never fired on its images.
    """
    ranked = explorer.atlas.rows("SELECT source_id, rank, item_id, score FROM exemplars "
                                 "WHERE concept = ? AND source_id IN ('real', ?) ORDER BY source_id = 'real' DESC, rank",
                                 [concept, model])
    best = {r["source_id"]: r["item_id"] for r in ranked if r["rank"] == 0}
    pairs = [(r["source_id"], r["item_id"]) for r in ranked]
    if "real" in best:
        pairs += [("real", best["real"]), (model, best["real"])]
    if model in best:
        pairs += [(model, best[model]), ("real", best[model])]
    images = _images(explorer, concept, pairs, energies)
    by_slot = {image["slot"]: image for image in images}
    exemplars: dict[str, list[dict]] = {"real": [], "generated": []}
    for slot, row in enumerate(ranked):
        if slot in by_slot:
            exemplars["real" if row["source_id"] == "real" else "generated"].append(
                {**by_slot[slot], "score": row["score"]})
    quad: dict[str, list[dict[str, Any]]] = {"real_best": [], "generated_best": []}
    slot = len(ranked)
    for key, side in (("real_best", "real"), ("generated_best", model)):
        if side in best:
            quad[key] = [by_slot[s] for s in (slot, slot + 1) if s in by_slot]
            slot += 2
    return quad, exemplars


def energy_histogram(explorer: Explorer, model: str, energies: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The concept's per-image energies, real vs ``model``: shares of images per energy bin, and where it fires."""
    counts = {r["source_id"]: r["n_images"] for r in explorer.atlas.rows(
        "SELECT source_id, n_images FROM sources WHERE source_id IN ('real', ?)", [model])}
    values = {side: np.fromiter(energies[side].values(), dtype=float, count=len(energies[side]))
              for side in ("real", model)}
    top = max((float(v.max()) for v in values.values() if v.size), default=1.0)
    edges = np.linspace(0.0, top if top > 0 else 1.0, HISTOGRAM_BINS + 1)
    shares = {side: (np.histogram(v, bins=edges)[0] / max(counts.get(side, 1), 1)).tolist()
              for side, v in values.items()}
    return {"edges": edges.tolist(), "real": shares["real"], "generated": shares[model],
            "fires": {"real": values["real"].size / max(counts.get("real", 1), 1),
                      "generated": values[model].size / max(counts.get(model, 1), 1)}}


def _nearest(explorer: Explorer, concept: int, k: int = 10) -> dict[str, Any]:
    if not explorer.atoms.available:
        return {"available": False, "reason": explorer.atoms.missing_reason, "concepts": []}
    pairs = explorer.atoms.nearest(concept, k)
    labels = explorer.labels.all()
    names = {r["concept"]: r["label"] for r in explorer.atlas.rows(
        "SELECT concept, label FROM concepts WHERE concept IN (SELECT unnest(?::INTEGER[]))", [[c for c, _ in pairs]])}
    return {"available": True, "reason": "", "concepts": [
        {"concept": c, "cosine": cosine, "label": labels.get(c, names.get(c, f"#{c}"))} for c, cosine in pairs]}


def _attributions(explorer: Explorer, concept: int, model: str, top: int = 8) -> dict[str, Any] | None:
    """The internal features most attributed to the concept (internal lens), or None when it did not run."""
    if "attributions" not in explorer.tables or not explorer.atlas.rows(
            "SELECT 1 FROM attributions WHERE source_id = ? LIMIT 1", [model]):
        return None
    feature_info = "internal_features" in explorer.tables
    columns = "f.label AS feature_label, f.minority, f.kept" if feature_info else \
        "'' AS feature_label, NULL AS minority, NULL AS kept"
    join = "LEFT JOIN internal_features f ON f.source_id = a.source_id AND f.feature = a.feature" if feature_info else ""
    features = explorer.atlas.rows(f"""
        SELECT a.rank, a.feature, a.score, {columns} FROM attributions a {join}
        WHERE a.source_id = ? AND a.concept = ? ORDER BY a.rank LIMIT ?""", [model, concept, top])
    probe = None
    if "attribution_probes" in explorer.tables:
        found = explorer.atlas.rows("SELECT positives, auroc FROM attribution_probes WHERE source_id = ? AND concept = ?",
                                    [model, concept])
        probe = found[0] if found else None
    ids = ",".join(str(f["feature"]) for f in features[:3])
    return {"features": features, "probe": probe,
            "steer_url": f"/steer?generator={quote(model)}&features={ids}&concept={concept}" if features else None}


def concept_card(explorer: Explorer, concept: int, model: str) -> dict[str, Any]:
    """The card's data (the page, the htmx fragment and ``/api/concepts/{id}`` all render this)."""
    explorer.check_concept(concept)
    info = explorer.atlas.rows("""
        SELECT concept, label AS automatic_label, caption_words, vlm_label, world_concept, world_auroc,
               umap_x, umap_y, is_dead FROM concepts WHERE concept = ?""", [concept])[0]
    user_label = explorer.labels.get(concept)
    stats = explorer.atlas.rows("""
        SELECT source_id, e_real, e_gen, delta, relative_delta, nu_real, nu_gen, suppressed, exaggerated,
               ci_low, ci_high, significant FROM concept_stats WHERE concept = ? ORDER BY source_id""", [concept])
    selected = next((s for s in stats if s["source_id"] == model), None)
    if selected is None:
        raise NotFound(f"no statistics of concept {concept} for model {model!r}")
    energies = _concept_energies(explorer, concept, model)
    quad, exemplars = gallery(explorer, concept, model, energies)
    return {
        **info,
        "label": user_label or info["automatic_label"],
        "user_label": user_label,
        "model": model,
        "models": explorer.models(),
        "stats": selected,
        "deltas": stats,
        "quad": quad,
        "exemplars": exemplars,
        "histogram": energy_histogram(explorer, model, energies),
        "cooccurring": explorer.edges(concept, model, top=10, fired={k: list(v) for k, v in energies.items()}),
        "nearest": _nearest(explorer, concept),
        "attributions": _attributions(explorer, concept, model),
    }


def set_label(explorer: Explorer, concept: int, text: str) -> dict[str, Any]:
    """Store the user's label of ``concept`` ('' restores the automatic one); return what the card now shows."""
    explorer.check_concept(concept)
    stored = explorer.labels.set(concept, text)
    automatic = explorer.atlas.rows("SELECT label FROM concepts WHERE concept = ?", [concept])[0]["label"]
    return {"concept": concept, "label": stored or automatic, "user_label": stored or None,
            "automatic_label": automatic}


def heatmap_png(explorer: Explorer, source_id: str, concept: int, item_id: str) -> bytes:
    """The concept's token map on one exemplar as an RGBA PNG of the patch grid (the browser scales it up)."""
    explorer.check_concept(concept)
    found = explorer.atlas.rows("SELECT grid_rows, grid_cols, heatmap FROM heatmaps "
                                "WHERE source_id = ? AND concept = ? AND item_id = ?", [source_id, concept, item_id])
    if not found:
        raise NotFound(f"no heatmap of concept {concept} on {source_id}/{item_id}")
    return heat_png(found[0])


def heat_png(row: dict[str, Any]) -> bytes:
    """A stored heatmap row (``heatmap`` uint8 row-major bytes, ``grid_rows``, ``grid_cols``) as an RGBA PNG:
    colour from the HEAT ramp, alpha the activation itself."""
    grid = np.frombuffer(bytes(row["heatmap"]), dtype=np.uint8).reshape(row["grid_rows"], row["grid_cols"])
    position = grid.astype(float) / 255 * (len(HEAT) - 1)
    anchors = np.arange(len(HEAT))
    rgb = np.stack([np.interp(position, anchors, HEAT[:, c]) for c in range(3)], axis=-1)
    rgba = np.concatenate([rgb, grid[..., None].astype(float)], axis=-1).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgba).save(out, format="PNG")
    return out.getvalue()

