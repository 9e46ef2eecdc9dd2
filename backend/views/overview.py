"""The overview: the build, its sources and stages, each generator's flag counts and strongest blindspots, and a
page of the image pairs (one data function for the page and its JSON twin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.atlas import Atlas
from backend.query import USER_LABELS, FlagRule, analysis_settings, user_label_params
from precompute.atlas.stages import STAGES


def blindspots(atlas: Atlas, source_id: str, direction: str, limit: int = 8,
               labels: Mapping[int, str] | None = None, flags: str = "atlas") -> list[dict[str, Any]]:
    """The most suppressed (``direction='suppressed'``) or exaggerated concepts of a generator, labelled with
    the user's labels where there are (``labels``: concept -> label); ``flags``: the atlas's flags, or
    ``"paper"`` for the paper's thresholds alone."""
    order = "s.delta ASC" if direction == "suppressed" else "s.delta DESC"
    flag = FlagRule(flags).column(direction)
    return atlas.rows(f"""
        WITH {USER_LABELS}
        SELECT s.concept, coalesce(u.label, c.label) AS label, c.world_concept, c.label_auroc,
               u.label IS NOT NULL AS user_label, s.delta, s.ci_low, s.ci_high, s.significant, s.q_value,
               s.nu_real, s.nu_gen,
               (SELECT path FROM exemplars x JOIN images i ON i.item_id = x.item_id AND i.source_id = 'real'
                WHERE x.source_id = 'real' AND x.concept = s.concept AND x.rank = 0) AS real_exemplar
        FROM concept_stats s JOIN concepts c USING (concept) LEFT JOIN user_labels u ON u.concept = s.concept
        WHERE s.source_id = ? AND {flag} AND NOT c.is_dead
        ORDER BY {order}, s.concept LIMIT ?""", [*user_label_params(labels), source_id, limit])


def overview_data(atlas: Atlas, offset: int = 0, limit: int = 24,
                  labels: dict[int, str] | None = None, flags: FlagRule = FlagRule.atlas) -> dict[str, Any]:
    """The overview: the build, its sources and stages, each generator's flag counts beside the null controls',
    its strongest blindspots (with the user's labels; ``flags``: the atlas's or the paper's thresholds alone)
    and a page of the image pairs."""
    info = atlas.info()
    built = atlas.stages()
    analysed = atlas.analysed()
    return {
        "run_name": info.get("run_name", ""),
        "built_at": info.get("built_at", ""),
        "n_items": atlas.count_items(),
        "sources": atlas.sources(),
        "stages": [{"name": s.name, "description": s.description, "built": s.name in built,
                    "note": "" if s.name in built else (s.note or "not run")} for s in STAGES],
        "skipped": atlas.skipped_summary(),
        "planted_effects": atlas.planted_effects(),
        "pairs": atlas.pairs(offset, limit),
        "analysed": analysed,
        "flags": flags,
        "thresholds": analysis_settings(atlas) if analysed else None,
        "flag_counts": atlas.rows("SELECT * FROM source_summary ORDER BY source_id") if analysed else [],
        "null_controls": atlas.rows("SELECT * FROM null_controls ORDER BY kind DESC, control") if analysed else [],
        "blindspots": {s["source_id"]: {d: blindspots(atlas, s["source_id"], d, labels=labels, flags=flags)
                                        for d in ("suppressed", "exaggerated")}
                       for s in atlas.sources() if s["source_id"] != "real"} if analysed else {},
        "models": [s["source_id"] for s in atlas.sources() if s["source_id"] != "real"],
        "offset": offset,
        "limit": limit,
    }
