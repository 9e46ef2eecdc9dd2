"""Request dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from backend.atlas import Atlas
from backend.explorer import Explorer


# Plain lookups, declared async so FastAPI calls them on the event loop instead of handing each one to a thread.
async def get_atlas(request: Request) -> Atlas:
    return request.app.state.atlas


async def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


async def get_explorer(request: Request) -> Explorer:
    return request.app.state.explorer


AtlasDep = Annotated[Atlas, Depends(get_atlas)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
ExplorerDep = Annotated[Explorer, Depends(get_explorer)]


async def get_user_labels(request: Request) -> dict[int, str]:
    """The user's own concept labels (concept id -> label); analysis views show them instead of the atlas's."""
    return request.app.state.explorer.labels.all()


UserLabelsDep = Annotated[dict[int, str], Depends(get_user_labels)]
