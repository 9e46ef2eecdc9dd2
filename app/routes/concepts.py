"""Concept cards (page, htmx fragment, JSON twin), the tooltip brief, heatmap overlays and user labels."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.deps import ExplorerDep, TemplatesDep
from app.render import is_htmx, render
from backend.explorer import Explorer
from backend.labels import MAX_LABEL, LabelError
from backend.views.concept import (BANDS, activation_band, card_page_data, concept_card, heatmap_png, remove_label,
                                   set_label)
from backend.views.concept_html import example_grid

router = APIRouter(tags=["concepts"])

ConceptId = Annotated[int, Path(ge=0, le=10_000_000)]
Model = Annotated[str | None, Query(max_length=200, description="a generator of the atlas (default: the first)")]
Side = Annotated[Literal["real", "generated"], Query(description="the real images or the selected model's")]
Band = Annotated[int, Query(ge=0, le=BANDS - 1, description="0: the top quarter of the images where it fires")]
MAX_LABEL_BODY = 12 * MAX_LABEL + 64  # bytes: a label of 4-byte characters percent-encoded or JSON-escaped, and its key


async def _index_ready(explorer: Explorer) -> None:
    """Cards and tooltips are computed on the event loop: from the in-memory card index they cost well under a
    millisecond, less than handing them to a worker thread. Only while that index is still being read (at start)
    does a request wait for it, in a thread."""
    if explorer.analysed and not explorer.cards.ready:
        await run_in_threadpool(explorer.cards.get)


async def _card(explorer: Explorer, concept: int, model: str | None) -> dict[str, Any]:
    await _index_ready(explorer)
    return concept_card(explorer, concept, explorer.model(model))


@router.get("/concepts/{concept}", response_class=HTMLResponse)
async def concept_page(request: Request, explorer: ExplorerDep, templates: TemplatesDep, concept: ConceptId,
                       model: Model = None) -> HTMLResponse:
    card = await _card(explorer, concept, model)
    data = {"run_name": explorer.atlas.info().get("run_name", ""), **card_page_data(card)}
    return render(request, templates, "concept.html", "_concept_card.html", data)


@router.get("/api/concepts/{concept}")
async def concept_json(explorer: ExplorerDep, concept: ConceptId, model: Model = None) -> dict[str, Any]:
    return await _card(explorer, concept, model)


@router.get("/api/concepts/{concept}/brief")
async def concept_brief(explorer: ExplorerDep, concept: ConceptId, model: Model = None) -> dict[str, Any]:
    """Id, label and delta: what the scatter's tooltip shows."""
    await _index_ready(explorer)
    return explorer.brief(concept, explorer.model(model))


async def _label_field(request: Request) -> str:
    """The ``label`` of a form post (htmx) or of a JSON body."""
    body = await request.body()
    if len(body) > MAX_LABEL_BODY:
        raise LabelError(f"a label has at most {MAX_LABEL} characters; the request body is {len(body)} bytes")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            value = json.loads(body or b"{}").get("label")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise LabelError('expected a JSON object {"label": "..."}') from None
    else:
        try:
            value = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict").get("label", [None])[0]
        except UnicodeDecodeError:
            raise LabelError("expected a UTF-8 form with a 'label' field") from None
    if not isinstance(value, str):
        raise LabelError("expected a 'label' field with the new label")
    return value


@router.post("/api/concepts/{concept}/label", response_model=None)
async def concept_label(request: Request, explorer: ExplorerDep, templates: TemplatesDep,
                        concept: ConceptId) -> HTMLResponse | JSONResponse:
    """Store the user's label of a concept; htmx gets the card's label block back, others JSON."""
    stored = set_label(explorer, concept, await _label_field(request))
    if is_htmx(request):
        return templates.TemplateResponse(request, "_concept_label.html", {"card": stored, "saved": True})
    return JSONResponse(stored)


@router.delete("/api/concepts/{concept}/label", response_model=None)
async def concept_label_removed(request: Request, explorer: ExplorerDep, templates: TemplatesDep,
                                concept: ConceptId) -> HTMLResponse | JSONResponse:
    """Drop the user's label of a concept, so the automatic label shows again."""
    stored = remove_label(explorer, concept)
    if is_htmx(request):
        return templates.TemplateResponse(request, "_concept_label.html", {"card": stored, "saved": True})
    return JSONResponse(stored)


@router.get("/concepts/{concept}/examples", response_class=HTMLResponse)
def examples_fragment(request: Request, explorer: ExplorerDep, templates: TemplatesDep, concept: ConceptId,
                      side: Side, band: Band = 0, model: Model = None) -> HTMLResponse:
    """One quantile band of the card's activation examples, with the button that loads the next one."""
    found = activation_band(explorer, concept, explorer.model(model), side, band)
    return templates.TemplateResponse(request, "_activation_band.html", {
        "band": found, "grid": example_grid(found["images"], "no image of this band")})


@router.get("/api/concepts/{concept}/examples")
def examples_json(explorer: ExplorerDep, concept: ConceptId, side: Side, band: Band = 0,
                  model: Model = None) -> dict[str, Any]:
    return activation_band(explorer, concept, explorer.model(model), side, band)


@router.get("/api/heatmaps/{source_id}/{concept}/{item_id}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def heatmap(explorer: ExplorerDep, source_id: Annotated[str, Path(max_length=200)], concept: ConceptId,
            item_id: Annotated[str, Path(max_length=500)]) -> Response:
    """The concept's token map on one exemplar: an RGBA patch-grid PNG whose alpha is the activation."""
    return Response(heatmap_png(explorer, source_id, concept, item_id), media_type="image/png",
                    headers={"Cache-Control": "max-age=3600"})
