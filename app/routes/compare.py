"""Model comparison: page, htmx fragment and JSON twin."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.views.compare import compare_charts, compare_data, nearest_concept

router = APIRouter(tags=["compare"])

Model = Annotated[str | None, Query(max_length=200, description="a generator's source id")]
Delta = Annotated[float, Query(ge=-1.0, le=2.0, description="a delta on the chart's axis")]


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep, a: Model = None,
                 b: Model = None) -> HTMLResponse:
    data = compare_data(atlas, a, b, labels)
    return render(request, templates, "compare.html", "_compare.html", {**data, "charts": compare_charts(data)})


@router.get("/api/compare")
def compare_json(atlas: AtlasDep, labels: UserLabelsDep, a: Model = None, b: Model = None) -> dict[str, Any]:
    return compare_data(atlas, a, b, labels)


@router.get("/compare/nearest", response_class=RedirectResponse, status_code=303)
def nearest(atlas: AtlasDep, at_x: Delta, at_y: Delta, a: Model = None, b: Model = None) -> RedirectResponse:
    """The card of the concept nearest a click on the delta scatter (delta under a, delta under b)."""
    concept, model = nearest_concept(atlas, a, b, at_x, at_y)
    return RedirectResponse(f"/concepts/{concept}?model={quote(model, safe='')}", status_code=303)
