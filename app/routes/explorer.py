"""The explorer: the UMAP of all concepts with search, neighbours, co-occurrence edges and lasso rankings.

``backend.views.explorer.explorer_data`` feeds the page (``/explorer``) and its JSON twin (``/api/explorer``); the
scatter itself reads one binary payload (``/api/explorer/points.bin``, layout in
``backend.explorer``). Every piece of view state is a query parameter, so a URL
reproduces the view.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.deps import ExplorerDep, TemplatesDep
from app.render import render
from backend.explorer import MAX_QUERY, Colour, Order, Size
from backend.views.concept import card_page_data, concept_card
from backend.views.explorer import explorer_data

router = APIRouter(tags=["explorer"])

Model = Annotated[str | None, Query(max_length=200, description="a generator of the atlas (default: the first)")]
ConceptId = Annotated[int | None, Query(ge=0, le=10_000_000, description="the selected concept")]
Radius = Annotated[float | None, Query(ge=0.0, le=1.0, description="neighbour radius as a share of the UMAP's "
                                                                   "extent (default: about 8 neighbours)")]
Text = Annotated[str, Query(max_length=MAX_QUERY, description="text the concept label contains")]
MAX_SELECTION = 1_000_000


@router.get("/explorer", response_class=HTMLResponse)
def explorer_page(request: Request, explorer: ExplorerDep, templates: TemplatesDep, model: Model = None,
                  colour: Colour = "delta", size: Size = "uniform", concept: ConceptId = None,
                  radius: Radius = None) -> HTMLResponse:
    data = explorer_data(explorer, model, colour, size, concept, radius)
    if data["analysed"] and concept is not None:
        data.update(card_page_data(concept_card(explorer, concept, data["state"]["model"])))
    return render(request, templates, "explorer.html", None, data)


@router.get("/api/explorer")
def explorer_json(explorer: ExplorerDep, model: Model = None, colour: Colour = "delta", size: Size = "uniform",
                  concept: ConceptId = None, radius: Radius = None) -> dict[str, Any]:
    return explorer_data(explorer, model, colour, size, concept, radius)


@router.get("/api/explorer/points.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "24-byte header + float32 (x, y, value) per concept"}})
def points(request: Request, explorer: ExplorerDep, model: Model = None, colour: Colour = "delta") -> Response:
    headers = {"Cache-Control": "max-age=600", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):  # compressed once and kept, not on every request
        payload = explorer.points_gzip(explorer.model(model), colour)
        headers["Content-Encoding"] = "gzip"
    else:
        payload = explorer.points(explorer.model(model), colour)
    return Response(payload, media_type="application/octet-stream", headers=headers)


@router.get("/api/explorer/layout-order.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "uint32 per concept: the points in the scatter's spatial-index order"}})
def layout_order(request: Request, explorer: ExplorerDep) -> Response:
    """The order of the map's points in regl-scatterplot's KDBush index, so the page need not sort them."""
    raw, compressed = explorer.layout_order()
    headers = {"Cache-Control": "max-age=600", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(compressed, media_type="application/octet-stream", headers=headers)
    return Response(raw, media_type="application/octet-stream", headers=headers)


@router.get("/api/explorer/context")
def context(explorer: ExplorerDep, concept: Annotated[int, Query(ge=0, le=10_000_000)], model: Model = None,
            radius: Radius = None) -> dict[str, Any]:
    """What the scatter draws around a selected concept: its neighbours and its co-occurrence edges."""
    model = explorer.model(model)
    radius = explorer.default_radius if radius is None else radius
    return {"concept": explorer.brief(concept, model),
            "neighbours": explorer.neighbours(concept, radius, model) if radius > 0 else [],
            "edges": explorer.edges(concept, model)}


@router.get("/explorer/search", response_class=HTMLResponse)
def search_fragment(request: Request, explorer: ExplorerDep, templates: TemplatesDep, q: Text = "",
                    model: Model = None) -> HTMLResponse:
    model = explorer.model(model)
    return templates.TemplateResponse(request, "_search_results.html",
                                      {"results": explorer.search(q, model), "q": q, "model": model})


@router.get("/api/explorer/search")
def search_json(explorer: ExplorerDep, q: Text = "", model: Model = None) -> list[dict[str, Any]]:
    return explorer.search(q, explorer.model(model))


class Selection(BaseModel):
    """Concepts picked with the lasso, to be ranked by delta."""

    ids: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=MAX_SELECTION)
    model: str | None = Field(default=None, max_length=200)
    order: Order = "asc"


@router.post("/explorer/selection", response_class=HTMLResponse)
def selection_fragment(request: Request, explorer: ExplorerDep, templates: TemplatesDep,
                       selection: Selection) -> HTMLResponse:
    ranking = explorer.selection(selection.ids, explorer.model(selection.model), selection.order)
    return templates.TemplateResponse(request, "_selection.html", ranking)


@router.post("/api/explorer/selection")
def selection_json(explorer: ExplorerDep, selection: Selection) -> dict[str, Any]:
    return explorer.selection(selection.ids, explorer.model(selection.model), selection.order)
