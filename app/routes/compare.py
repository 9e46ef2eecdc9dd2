"""Model comparison: page, htmx fragment and JSON twin."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.compare import compare_charts, compare_data

router = APIRouter(tags=["compare"])

Model = Annotated[str | None, Query(max_length=200, description="a generator's source id")]


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep, a: Model = None,
                 b: Model = None) -> HTMLResponse:
    data = compare_data(atlas, a, b, labels)
    return render(request, templates, "compare.html", "_compare.html", {**data, "charts": compare_charts(data)})


@router.get("/api/compare")
def compare_json(atlas: AtlasDep, labels: UserLabelsDep, a: Model = None, b: Model = None) -> dict[str, Any]:
    return compare_data(atlas, a, b, labels)
