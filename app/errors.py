"""Errors turned into answers in one place: an HTML page for a browser, JSON for the API and for clients that ask.

``/api/`` paths always answer JSON (``{"detail": ...}``, FastAPI's shape); elsewhere a
request whose ``Accept`` prefers HTML over JSON (a browser navigating) gets a page with
the explorer's header and the reason, an htmx request the same reason as a fragment,
and any other client (curl, fetch's ``*/*``) JSON.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from app.render import is_htmx
from app.security import security_headers
from precompute.errors import BlindspotError

TITLES = {400: "Bad request", 403: "Refused", 404: "Not found", 405: "Method not allowed", 409: "Not possible",
          413: "Too large", 422: "Cannot use these values", 429: "Busy", 500: "Server error", 503: "Unavailable"}


def _quality(accept: str, *types: str) -> float:
    """The highest q the ``Accept`` header gives any of ``types`` by name (wildcards do not count)."""
    best = 0.0
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() not in types:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def wants_json(request: Request) -> bool:
    """JSON for ``/api/`` and for clients that do not ask for HTML first."""
    if request.url.path.startswith("/api/"):
        return True
    accept = request.headers.get("accept", "")
    html = _quality(accept, "text/html", "application/xhtml+xml")
    return html == 0 or _quality(accept, "application/json") > html


def _messages(detail: Any) -> list[str]:
    """A detail (a string, or FastAPI's list of validation errors) as lines a person reads."""
    if isinstance(detail, list):
        return [f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('path', 'query', 'body'))}: {e.get('msg')}"
                if isinstance(e, dict) else str(e) for e in detail]
    return [str(detail)]


def error_response(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    """The answer for an error: JSON or an HTML page (module docstring)."""
    if status in (204, 304):  # answers without a body
        return Response(status_code=status, headers=headers)
    if wants_json(request):
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=status, headers=headers)
    templates = request.app.state.templates
    atlas = getattr(request.app.state, "atlas", None)
    data = {"status": status, "title": TITLES.get(status, "Error"), "messages": _messages(detail),
            "run_name": atlas.info().get("run_name", "") if atlas is not None else ""}
    template = "_error.html" if is_htmx(request) else "error.html"
    return templates.TemplateResponse(request, template, data, status_code=status, headers=headers)


def _status(exc: Exception) -> tuple[int, Any, dict[str, str] | None]:
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail, exc.headers
    if isinstance(exc, RequestValidationError):
        return 422, exc.errors(), None
    if isinstance(exc, BlindspotError):
        return exc.status, str(exc), exc.headers()
    return 500, "the server failed on this request (its log has the details)", None


async def handle_error(request: Request, exc: Exception) -> Response:
    """The app's one exception handler: the error's status and reason, as the client reads it."""
    status, detail, headers = _status(exc)
    response = error_response(request, status, detail, headers)
    if status >= 500:
        # a 500 is answered outside the middleware stack: give it the headers every other answer has
        response.headers.update(security_headers(request.url.path))
    return response


# what ``create_app`` registers ``handle_error`` for; Exception: any bug, answered 500 (and still logged)
HANDLED = (HTTPException, RequestValidationError, BlindspotError, Exception)
