"""The internal lens: the minority ranking and feature cards as pages, their JSON twins, the features of a concept.

Queries live in ``backend.views.internal``; an atlas built without the internal lens answers
409 on the JSON endpoints and a page saying how to add one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.views import internal

router = APIRouter(tags=["internal"])

Generator = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Feature = Annotated[int, Path(ge=0, le=10_000_000)]
Concept = Annotated[int, Path(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get("/api/internal/{generator}/minority")
def minority(generator: Generator, atlas: AtlasDep, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """Features kept by NMS, most minority (rare and distinct) first."""
    return internal.minority_ranking(atlas, generator, limit, offset)


@router.get("/api/internal/{generator}/features/{feature}")
def feature(generator: Generator, feature: Feature, atlas: AtlasDep) -> dict[str, Any]:
    """A feature's card: scores, exemplars with their heatmaps, the concepts it drives most."""
    return internal.feature_card(atlas, generator, feature)


@router.get("/api/concepts/{concept}/features")
def concept_features(concept: Concept, atlas: AtlasDep, labels: UserLabelsDep,
                     generator: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Limit = 50) -> dict[str, Any]:
    """The internal features most attributed to an output-lens concept, and the probe's quality."""
    return internal.concept_features(atlas, concept, generator, limit, labels)


@router.get("/internal", response_class=HTMLResponse)
def minority_page(request: Request, atlas: AtlasDep, templates: TemplatesDep,
                  generator: Annotated[str | None, Query(max_length=64)] = None, limit: Limit = 50,
                  offset: Offset = 0) -> HTMLResponse:
    """The minority ranking after suppression (RAIGen), one generator at a time, paged."""
    return render(request, templates, "internal.html", "_internal.html",
                  internal.ranking_page(atlas, generator, limit, offset))


@router.get("/internal/{generator}/features/{feature}", response_class=HTMLResponse)
def feature_page(request: Request, generator: Generator, feature: Feature, atlas: AtlasDep,
                 templates: TemplatesDep, labels: UserLabelsDep) -> HTMLResponse:
    """A feature's card: its scores, exemplars with the feature's spatial map, the concepts it drives."""
    card = internal.feature_page(atlas, generator, feature, labels)
    return render(request, templates, "internal_feature.html", None, {"card": card})


@router.get("/api/internal/{generator}/features/{feature}/heatmaps/{item_id}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def feature_heatmap(generator: Generator, feature: Feature, atlas: AtlasDep,
                    item_id: Annotated[str, Path(max_length=500)]) -> Response:
    """The feature's spatial map on one exemplar: an RGBA PNG of the captured grid whose alpha is the activation."""
    return Response(internal.heatmap_png(atlas, generator, feature, item_id), media_type="image/png",
                    headers={"Cache-Control": "max-age=3600"})
