"""Co-occurrence spectra and frequency vs delta: pages, htmx fragments and JSON twins."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.views.cooccurrence import cooccurrence_charts, cooccurrence_data
from backend.views.frequency import AxisScale, FrequencyY, frequency_chart, frequency_data, nearest_concept

router = APIRouter(tags=["cooccurrence"])

Model = Annotated[str | None, Query(max_length=200, description="a generator's source id")]


@router.get("/cooccurrence", response_class=HTMLResponse)
def cooccurrence_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, model: Model = None) -> HTMLResponse:
    data = cooccurrence_data(atlas, model)
    return render(request, templates, "cooccurrence.html", "_cooccurrence.html",
                  {**data, "charts": cooccurrence_charts(data)})


@router.get("/api/cooccurrence")
def cooccurrence_json(atlas: AtlasDep, model: Model = None) -> dict[str, Any]:
    return cooccurrence_data(atlas, model)


@router.get("/frequency", response_class=HTMLResponse)
def frequency_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep,
                   model: Model = None, y: FrequencyY = FrequencyY.delta_sharp,
                   scale: AxisScale = AxisScale.linear) -> HTMLResponse:
    data = frequency_data(atlas, model, y, scale, labels)
    return render(request, templates, "frequency.html", "_frequency.html", {**data, "chart": frequency_chart(data)})


@router.get("/api/frequency")
def frequency_json(atlas: AtlasDep, labels: UserLabelsDep, model: Model = None,
                   y: FrequencyY = FrequencyY.delta_sharp, scale: AxisScale = AxisScale.linear) -> dict[str, Any]:
    return frequency_data(atlas, model, y, scale, labels)


@router.get("/frequency/nearest", response_class=RedirectResponse, status_code=303)
def frequency_nearest(atlas: AtlasDep, at_x: Annotated[float, Query(ge=-1.0, le=2.0)],
                      at_y: Annotated[float, Query(ge=-1.0, le=2.0)], model: Model = None,
                      y: FrequencyY = FrequencyY.delta_sharp, scale: AxisScale = AxisScale.linear) -> RedirectResponse:
    """The card of the concept nearest a click on the frequency chart."""
    concept, found = nearest_concept(atlas, model, y, scale, at_x, at_y)
    return RedirectResponse(f"/concepts/{concept}?model={quote(found, safe='')}", status_code=303)
