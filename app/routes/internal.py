"""Internal-lens JSON endpoints: the minority ranking, a feature's card, the features attributed to a concept.

Queries live in ``backend.internal``; an atlas built without the internal lens answers 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from app.deps import AtlasDep
from backend import internal
from backend.atlas import Atlas

router = APIRouter(tags=["internal"])

Generator = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Feature = Annotated[int, Path(ge=0, le=10_000_000)]
Concept = Annotated[int, Path(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _answer(query, atlas: Atlas, *args: Any) -> dict[str, Any]:
    try:
        return query(atlas, *args)
    except internal.NoInternalLens as exc:
        raise HTTPException(409, detail=str(exc)) from None


@router.get("/api/internal/{generator}/minority")
def minority(generator: Generator, atlas: AtlasDep, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """Features kept by NMS, most minority (rare and distinct) first."""
    return _answer(internal.minority_ranking, atlas, generator, limit, offset)


@router.get("/api/internal/{generator}/features/{feature}")
def feature(generator: Generator, feature: Feature, atlas: AtlasDep) -> dict[str, Any]:
    """A feature's card: scores, exemplars with their heatmaps, the concepts it drives most."""
    return _answer(internal.feature_card, atlas, generator, feature)


@router.get("/api/concepts/{concept}/features")
def concept_features(concept: Concept, atlas: AtlasDep,
                     generator: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Limit = 50) -> dict[str, Any]:
    """The internal features most attributed to an output-lens concept, and the probe's quality."""
    return _answer(internal.concept_features, atlas, concept, generator, limit)
