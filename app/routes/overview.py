"""The atlas overview: sources, stage manifests, skipped items and sample pairs.

One data function (``backend.views.overview``) feeds the HTML page and its JSON twin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from backend.query import FlagRule
from backend.views.overview import overview_data

router = APIRouter(tags=["overview"])

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=200)]


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
