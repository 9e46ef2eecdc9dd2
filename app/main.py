"""The web app factory: ``create_app(settings)`` opens the atlas in a lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.routes import images, overview
from app.settings import Settings
from backend.atlas import Atlas, NotFound
from precompute.errors import BlindspotError


def create_app(settings: Settings) -> FastAPI:
    frontend = resources.files("frontend")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.atlas = Atlas(settings.atlas)
        try:
            yield
        finally:
            app.state.atlas.close()

    app = FastAPI(title="Blindspot Atlas", lifespan=lifespan)
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=str(frontend / "templates"))
    app.mount("/static", StaticFiles(directory=str(frontend / "static")), name="static")
    app.include_router(overview.router)
    app.include_router(images.router)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BlindspotError)
    async def bad_input(request: Request, exc: BlindspotError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
