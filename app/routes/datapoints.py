"""Datapoints ranked by score, and the page of one pair: pages, htmx fragments and JSON twins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.views.datapoints import End, datapoints_data, pair_data

router = APIRouter(tags=["datapoints"])

Model = Annotated[str | None, Query(max_length=200, description="a generator's source id")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/datapoints", response_class=HTMLResponse)
def datapoints_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, model: Model = None,
                    end: End = End.memorization, offset: Offset = 0, limit: Limit = 24) -> HTMLResponse:
    return render(request, templates, "datapoints.html", "_datapoints.html",
                  datapoints_data(atlas, model, end, offset, limit))


@router.get("/api/datapoints")
def datapoints_json(atlas: AtlasDep, model: Model = None, end: End = End.memorization, offset: Offset = 0,
                    limit: Limit = 24) -> dict[str, Any]:
    return datapoints_data(atlas, model, end, offset, limit)


@router.get("/pairs/{item_id:path}", response_class=HTMLResponse)
def pair_page(request: Request, item_id: str, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep,
              model: Model = None) -> HTMLResponse:
    return render(request, templates, "pair.html", "_pair.html", pair_data(atlas, item_id, model, labels))


@router.get("/api/pairs/{item_id:path}")
def pair_json(item_id: str, atlas: AtlasDep, labels: UserLabelsDep, model: Model = None) -> dict[str, Any]:
    return pair_data(atlas, item_id, model, labels)
