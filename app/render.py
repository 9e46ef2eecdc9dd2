"""One data function, three renderings: the full page, the htmx fragment, and the JSON twin.

A view's route calls ``render`` with the page template and its fragment; htmx requests
(header ``HX-Request``) get the fragment only, so a swap replaces one part of the page
while a plain visit of the same URL (a shared link, a reload) gets the whole page.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from backend.svg import SEQUENTIAL
from backend.views.concept_html import label_block


def templates() -> Jinja2Templates:
    """The server's templates (``frontend/templates``).

    Read once: they ship with the package, so a changed template needs a restart of the server, as a changed
    module does. Jinja's default (``auto_reload``) would look at each template file's time on every render, and
    the concept card imports its macros on every click (``bench/card_html_bench.py`` renders with these).
    """
    loader = FileSystemLoader(str(resources.files("frontend") / "templates"))
    found = Jinja2Templates(env=Environment(loader=loader, autoescape=select_autoescape(), auto_reload=False))
    # the one sequential colour scale, for the scatter's colours as for the server's charts
    found.env.globals["sequential_scale"] = SEQUENTIAL.astype(int).tolist()
    # the concept card's label block, built in Python as the card's other parts are; the card and the label routes
    # (``_concept_label.html``) both draw it
    found.env.globals["label_block"] = label_block
    return found


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request", "").lower() == "true"


def render(request: Request, templates: Jinja2Templates, page: str, fragment: str | None,
           data: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """The fragment for an htmx request (when the view has one), else the full page."""
    template = fragment if fragment is not None and is_htmx(request) else page
    return templates.TemplateResponse(request, template, data, status_code=status_code)
