"""The atlas overview: sources, stage manifests, skipped items and sample pairs.

One data function feeds the HTML page and its JSON twin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from backend.atlas import Atlas
from backend.query import FlagRule, analysis_settings, blindspots
from precompute.pipeline import STAGES

router = APIRouter(tags=["overview"])

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=200)]


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


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep,
                  offset: Offset = 0, limit: Limit = 24, flags: FlagRule = FlagRule.atlas) -> HTMLResponse:
    return templates.TemplateResponse(request, "overview.html", overview_data(atlas, offset, limit, labels, flags))


@router.get("/api/overview")
def overview_json(atlas: AtlasDep, labels: UserLabelsDep, offset: Offset = 0, limit: Limit = 24,
                  flags: FlagRule = FlagRule.atlas) -> dict[str, Any]:
    return overview_data(atlas, offset, limit, labels, flags)


@router.get("/api/world/frequencies")
def world_frequencies(atlas: AtlasDep) -> list[dict[str, Any]]:
    """Ground-truth frequency of each world concept per source (empty for non-world atlases)."""
    return atlas.world_frequencies()


@router.get("/healthz")
def health() -> dict[str, str]:
    return {"status": "ok"}
