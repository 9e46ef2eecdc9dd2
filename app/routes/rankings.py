"""Rankings of suppressed and exaggerated blindspots: page, htmx fragment, "load more" rows, JSON, CSV, Parquet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.query import FlagRule
from backend.views.rankings import (Direction, RankingQuery, RankingSort, export_rows, rankings_data, to_csv,
                              to_parquet)

router = APIRouter(tags=["rankings"])

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Share = Annotated[float, Query(ge=0.0, le=1.0, description="share of real images in which the concept fires")]
Auroc = Annotated[float, Query(ge=0.0, le=1.0, description="the least AUROC of a concept's automatic label")]


def ranking_query(model: Annotated[str | None, Query(max_length=200)] = None,
                  direction: Direction = Direction.suppressed, flags: FlagRule = FlagRule.atlas,
                  significant: bool = False,
                  min_freq: Share = 0.0, max_freq: Share = 1.0, sort: RankingSort = RankingSort.delta,
                  min_label_auroc: Auroc = 0.0) -> RankingQuery:
    return RankingQuery(model=model, direction=direction, flags=flags, significant=significant, min_freq=min_freq,
                        max_freq=max_freq, sort=sort, min_label_auroc=min_label_auroc)


QueryDep = Annotated[RankingQuery, Depends(ranking_query)]


@router.get("/rankings", response_class=HTMLResponse)
def rankings_page(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep, query: QueryDep,
                  offset: Offset = 0, limit: Limit = 50) -> HTMLResponse:
    return render(request, templates, "rankings.html", "_rankings.html",
                  rankings_data(atlas, query, offset, limit, labels))


@router.get("/rankings/rows", response_class=HTMLResponse)
def rankings_rows(request: Request, atlas: AtlasDep, templates: TemplatesDep, labels: UserLabelsDep, query: QueryDep,
                  offset: Offset = 0, limit: Limit = 50) -> HTMLResponse:
    """The next rows of a ranking and its next "load more" row (appended in place by htmx)."""
    return templates.TemplateResponse(request, "_rankings_rows.html",
                                      rankings_data(atlas, query, offset, limit, labels))


@router.get("/api/rankings")
def rankings_json(atlas: AtlasDep, labels: UserLabelsDep, query: QueryDep, offset: Offset = 0,
                  limit: Limit = 50) -> dict[str, Any]:
    return rankings_data(atlas, query, offset, limit, labels)


def _filename(model: str | None, query: RankingQuery, extension: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (model or "none"))
    return f'attachment; filename="blindspots-{safe}-{query.direction}.{extension}"'


@router.get("/api/rankings.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "the rankings as CSV"}})
def rankings_csv(atlas: AtlasDep, labels: UserLabelsDep, query: QueryDep) -> Response:
    """Every blindspot the filters select (no paging), as CSV."""
    model, rows = export_rows(atlas, query, labels)
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": _filename(model, query, "csv")})


@router.get("/api/rankings.parquet", response_class=Response,
            responses={200: {"content": {"application/vnd.apache.parquet": {}},
                             "description": "the rankings as Parquet"}})
def rankings_parquet(atlas: AtlasDep, labels: UserLabelsDep, query: QueryDep) -> Response:
    """Every blindspot the filters select (no paging), as Parquet."""
    model, rows = export_rows(atlas, query, labels)
    return Response(to_parquet(rows), media_type="application/vnd.apache.parquet",
                    headers={"Content-Disposition": _filename(model, query, "parquet")})
