"""Read queries of the internal lens: minority features, a feature's card, the features attributed to a concept.

Tables (written by the ``internal`` stage, described in ``precompute.atlas.schema``):
``internal_features`` (RAIGen minority scores after NMS), ``internal_exemplars`` and
``internal_heatmaps`` (a feature's top generated images and its spatial map on each),
``attributions`` and ``attribution_probes`` (DiffLens-style attribution of output-lens
concepts to internal features). ``atlas_info.internal`` says which generators have an
internal lens; an atlas without one answers ``NoInternalLens``.
"""

from __future__ import annotations

import json
from urllib.parse import quote
from typing import Any

from backend.atlas import Atlas, NotFound
from backend.heatmaps import heat_png
from precompute.errors import BlindspotError

ATTRIBUTED_CONCEPTS = 10  # concepts listed on a feature's card, most attributed first
PROPOSED_FEATURES = 3  # features a concept card proposes to steer with
# A probe whose held-out AUROC is below this is not trusted to say which features drive its concept: steering
# proposes none for it (README, "Steering over HTTP", has the measurement behind the value).
PROBE_FLOOR = 0.75
RANKING_THUMBNAILS = 3  # top generated images shown per feature in the minority ranking


class NoInternalLens(BlindspotError):
    status = 409
    """The atlas was built without the internal lens (answered 409: the atlas, not the request, lacks it)."""


def internal_lenses(atlas: Atlas) -> dict[str, dict[str, Any]]:
    """``atlas_info.internal``: per generator its hook point, step, SAE folder, channels, grid and scored features."""
    lenses = json.loads(atlas.info().get("internal") or "{}")
    if not lenses:
        raise NoInternalLens(f"the atlas {atlas.root.name} has no internal lens; add an [[internal]] table for a "
                             "generator that captures activations to the run config and rebuild it")
    return lenses


def resolve_generator(atlas: Atlas, generator: str | None) -> tuple[str, dict[str, Any]]:
    """The generator a query is about (default: the first with an internal lens) and its lens description."""
    lenses = internal_lenses(atlas)
    if generator is None or generator == "":
        generator = sorted(lenses)[0]
    if generator not in lenses:
        raise NotFound(f"no internal lens for generator {generator!r}; this atlas has one for {sorted(lenses)}")
    return generator, lenses[generator]


def minority_ranking(atlas: Atlas, generator: str, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """The features kept by NMS, most minority first (RAIGen's ranking), with their scores."""
    generator, lens = resolve_generator(atlas, generator)
    total = atlas.rows("SELECT count(*) AS n FROM internal_features WHERE source_id = ? AND kept", [generator])
    features = atlas.rows("""
        WITH page AS (SELECT minority_rank, feature, minority, frequency, distinctiveness, label
                      FROM internal_features WHERE source_id = ? AND kept ORDER BY minority_rank LIMIT ? OFFSET ?)
        SELECT p.*, coalesce(list(m.path ORDER BY e.rank) FILTER (WHERE m.path IS NOT NULL), []) AS thumbnails
        FROM page p LEFT JOIN internal_exemplars e ON e.source_id = ? AND e.feature = p.feature AND e.rank < ?
        LEFT JOIN images m ON m.item_id = e.item_id AND m.source_id = e.source_id
        GROUP BY ALL ORDER BY p.minority_rank""", [generator, limit, offset, generator, RANKING_THUMBNAILS])
    return {"generator": generator, "lens": lens, "kept": total[0]["n"], "offset": offset, "limit": limit,
            "features": features}


def _heatmap(row: dict[str, Any]) -> dict[str, Any] | None:
    blob = row.pop("heatmap")
    rows, cols, scale = row.pop("grid_rows"), row.pop("grid_cols"), row.pop("scale")
    if blob is None:
        return None
    return {"rows": rows, "cols": cols, "scale": scale, "values": list(bytes(blob))}  # value = byte * scale / 255


def feature_card(atlas: Atlas, generator: str, feature: int) -> dict[str, Any]:
    """A scored feature: its scores, top generated images with its spatial map, the concepts it drives most."""
    generator, lens = resolve_generator(atlas, generator)
    found = atlas.rows("""
        SELECT feature, frequency, distinctiveness, minority, kept, minority_rank, label FROM internal_features
        WHERE source_id = ? AND feature = ?""", [generator, feature])
    if not found:
        raise NotFound(f"feature {feature} is not a scored feature of {generator!r} "
                       f"(the coarsest group: features 0..{lens.get('scored_features', 0) - 1})")
    exemplars = atlas.rows("""
        SELECT e.rank, e.item_id, e.score, i.caption, m.path AS image,
               h.grid_rows, h.grid_cols, h.scale, h.heatmap
        FROM internal_exemplars e
        LEFT JOIN items i ON i.item_id = e.item_id
        LEFT JOIN images m ON m.item_id = e.item_id AND m.source_id = e.source_id
        LEFT JOIN internal_heatmaps h ON h.source_id = e.source_id AND h.feature = e.feature AND h.item_id = e.item_id
        WHERE e.source_id = ? AND e.feature = ? ORDER BY e.rank""", [generator, feature])
    for row in exemplars:
        row["heatmap"] = _heatmap(row)
        row["image"] = f"/{row['image']}" if row["image"] else None
    concepts = atlas.rows("""
        SELECT a.concept, c.label, a.rank, a.score FROM attributions a LEFT JOIN concepts c USING (concept)
        WHERE a.source_id = ? AND a.feature = ? ORDER BY a.score DESC, a.concept LIMIT ?""",
                          [generator, feature, ATTRIBUTED_CONCEPTS])
    return {"generator": generator, "lens": lens, **found[0], "exemplars": exemplars, "attributed_concepts": concepts}


def concept_features(atlas: Atlas, concept: int, generator: str | None = None, limit: int = 50,
                     user_labels: dict[int, str] | None = None) -> dict[str, Any]:
    """The internal features most attributed to an output-lens concept, with the probe's quality (the concept
    named by the user's label when there is one)."""
    generator, lens = resolve_generator(atlas, generator)
    known = atlas.rows("SELECT label FROM concepts WHERE concept = ?", [concept])
    if not known:
        raise NotFound(f"no concept {concept} in this atlas")
    probe = atlas.rows("SELECT positives, auroc FROM attribution_probes WHERE source_id = ? AND concept = ?",
                       [generator, concept])
    features = atlas.rows("""
        SELECT a.rank, a.feature, a.score, f.minority, f.frequency, f.kept, f.minority_rank, f.label
        FROM attributions a LEFT JOIN internal_features f ON f.source_id = a.source_id AND f.feature = a.feature
        WHERE a.source_id = ? AND a.concept = ? ORDER BY a.rank LIMIT ?""", [generator, concept, limit])
    proposal = steer_proposal(atlas, generator, concept)
    label = (user_labels or {}).get(concept) or known[0]["label"]
    return {"generator": generator, "concept": concept, "label": label, "lens": lens,
            "probe": probe[0] if probe else None, "probe_floor": proposal["floor"], "features": features,
            "proposal": {k: proposal[k] for k in ("direction", "mode", "strength", "refused", "steer_url")}
            | {"features": [f["feature"] for f in proposal["features"]]}}


def steer_proposal(atlas: Atlas, generator: str, concept: int, count: int = PROPOSED_FEATURES,
                   floor: float = PROBE_FLOOR, direction: str | None = None) -> dict[str, Any]:
    """What to steer ``concept`` with, or why nothing is proposed (``refused``).

    The features are those whose increase raises the concept's probe (a positive integrated
    gradient, rank order). A suppressed concept is brought back by adding them (add mode at
    the default strength, in each feature's own units); an exaggerated one is lowered by
    removing them (scale mode, strength -1). ``direction``: 'suppressed' or 'exaggerated'
    (default: the concept's flag under ``generator``, suppressed when unflagged). Refused,
    with the reason, when no probe was fitted, its held-out AUROC is below ``floor``, or no
    feature raises the concept.
    """
    from backend.steering.inputs import DEFAULT_STRENGTH

    if direction is None:
        flags = atlas.rows("SELECT exaggerated FROM concept_stats WHERE source_id = ? AND concept = ?",
                           [generator, concept])
        direction = "exaggerated" if flags and flags[0]["exaggerated"] else "suppressed"
    if direction not in ("suppressed", "exaggerated"):
        raise BlindspotError(f"direction must be 'suppressed' or 'exaggerated', got {direction!r}")
    found = atlas.rows("SELECT positives, auroc FROM attribution_probes WHERE source_id = ? AND concept = ?",
                       [generator, concept])
    probe = found[0] if found else None
    features = atlas.rows("""
        SELECT a.rank, a.feature, a.score FROM attributions a
        WHERE a.source_id = ? AND a.concept = ? AND a.score > 0 ORDER BY a.rank LIMIT ?""",
                          [generator, concept, count])
    refused = None
    if probe is None or probe["auroc"] is None:
        positives = probe["positives"] if probe else 0
        refused = (f"no probe was fitted for concept {concept}: it is present in {positives} of {generator}'s "
                   "images, too few (or too many) to learn which internal features drive it")
    elif probe["auroc"] < floor:
        refused = (f"the probe of concept {concept} reaches a held-out AUROC of {probe['auroc']:.3f}, below the "
                   f"floor of {floor:.3g}: its attribution is not trusted, so no feature is proposed")
    elif not features:
        refused = f"no internal feature of {generator} raises concept {concept}'s probe"
    mode, strength = ("add", DEFAULT_STRENGTH["add"]) if direction == "suppressed" else ("scale", -1.0)
    chosen = [] if refused else features
    steer_url = None
    if chosen:
        edits = ",".join(f"{f['feature']}:{strength:g}" for f in chosen)
        steer_url = (f"/steer?generator={quote(generator)}&features={quote(edits, safe=':,')}&mode={mode}"
                     f"&concept={concept}&sweep=true")
    return {"generator": generator, "concept": concept, "direction": direction, "probe": probe, "floor": floor,
            "refused": refused, "features": chosen, "mode": mode, "strength": strength, "steer_url": steer_url}


def scored_features(atlas: Atlas, generator: str) -> list[int]:
    """Every scored feature of a generator's internal SAE that ever fires (a live minority score)."""
    return [r["feature"] for r in atlas.rows(
        "SELECT feature FROM internal_features WHERE source_id = ? AND minority IS NOT NULL ORDER BY feature",
        [generator])]


def heatmap_png(atlas: Atlas, generator: str, feature: int, item_id: str) -> bytes:
    """A feature's spatial map on one of its exemplars, as the concept cards' heatmap PNG (alpha = activation)."""
    generator, _ = resolve_generator(atlas, generator)
    found = atlas.rows("SELECT grid_rows, grid_cols, heatmap FROM internal_heatmaps "
                       "WHERE source_id = ? AND feature = ? AND item_id = ?", [generator, feature, item_id])
    if not found:
        raise NotFound(f"no spatial map of feature {feature} of {generator!r} on item {item_id!r}")
    return heat_png(found[0])


def ranking_page(atlas: Atlas, generator: str | None, limit: int, offset: int) -> dict[str, Any]:
    """The minority ranking page: every generator with an internal lens, the chosen one's features, paging links."""
    try:
        lenses = internal_lenses(atlas)
    except NoInternalLens as exc:
        return {"missing": str(exc), "generators": [], "generator": None}
    data = minority_ranking(atlas, generator or sorted(lenses)[0], limit, offset)
    following = offset + len(data["features"])
    base = f"/internal?generator={quote(data['generator'])}&limit={limit}"
    data.update(generators=sorted(lenses), missing=None,
                next_url=f"{base}&offset={following}" if following < data["kept"] else None,
                previous_url=f"{base}&offset={max(0, offset - limit)}" if offset > 0 else None)
    return data


def feature_page(atlas: Atlas, generator: str, feature: int, user_labels: dict[int, str]) -> dict[str, Any]:
    """A feature's card for the page: exemplars with heatmap URLs instead of values, the user's concept labels."""
    card = feature_card(atlas, generator, feature)
    for row in card["exemplars"]:
        if row.pop("heatmap") is not None:
            row["heatmap_url"] = (f"/api/internal/{quote(card['generator'])}/features/{feature}"
                                  f"/heatmaps/{quote(row['item_id'])}.png")
    for row in card["attributed_concepts"]:
        row["label"] = user_labels.get(row["concept"]) or row["label"] or ""
    card["steer_url"] = f"/steer?generator={quote(card['generator'])}&features={feature}"
    return card
