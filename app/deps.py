"""Request dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from backend.atlas import Atlas


def get_atlas(request: Request) -> Atlas:
    return request.app.state.atlas


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


AtlasDep = Annotated[Atlas, Depends(get_atlas)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
