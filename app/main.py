"""The web app factory: ``create_app(settings)`` opens the atlas in a lifespan.

Every request passes the web defences first (``app.security``: host allow-list,
cross-site refusal, security headers); every error becomes an answer in one handler
(``app.errors``: a page for a browser, JSON for the API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from app.errors import HANDLED, error_response, handle_error
from app.render import templates
from app.routes import compare, concepts, cooccurrence, datapoints, explorer, images, overview, rankings
from app.routes import internal, steer
from app.security import WebDefences, allowed_hosts
from app.settings import Settings
from app.static import CompressedStaticFiles
from backend.atlas import Atlas
from backend.explorer import Explorer
from backend.labels import LabelStore, default_label_path, lens_identity
from backend.steering.atlas import steering_services


def create_app(settings: Settings) -> FastAPI:
    frontend = resources.files("frontend")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.atlas = Atlas(settings.atlas)
        app.state.templates.env.globals["run_name"] = app.state.atlas.info().get("run_name", "")  # every header
        labels = LabelStore(settings.labels or default_label_path(settings.atlas),
                            lens_identity(app.state.atlas.root, app.state.atlas.info()))
        app.state.explorer = Explorer(app.state.atlas, labels)
        # the card's tables, read in the background (about 1 s at 32,000 concepts)
        warming = app.state.explorer.cards.warm() if app.state.explorer.analysed else None
        # steering only where the atlas has an internal lens; models load on the first request
        app.state.steering, app.state.steering_unavailable = steering_services(app.state.atlas)
        for service in app.state.steering.values():
            service.start()
        try:
            yield
        finally:
            for service in app.state.steering.values():
                service.close()
            if warming is not None:
                warming.join()  # it reads the atlas: let it finish before the atlas closes
            app.state.atlas.close()

    app = FastAPI(title="Blindspot Atlas", lifespan=lifespan)
    # HTML, JSON, CSS, JS and the binary point payload compressed (images are PNG, left as they are)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.state.settings = settings
    app.state.templates = templates()
    app.mount("/static", CompressedStaticFiles(directory=str(frontend / "static")), name="static")
    app.include_router(overview.router)
    app.include_router(images.router)
    app.include_router(explorer.router)
    app.include_router(concepts.router)
    app.include_router(rankings.router)
    app.include_router(compare.router)
    app.include_router(datapoints.router)
    app.include_router(cooccurrence.router)
    app.include_router(internal.router)
    app.include_router(steer.router)

    for kind in HANDLED:
        app.add_exception_handler(kind, handle_error)
    app.add_middleware(WebDefences, hosts=allowed_hosts(settings.host, settings.allow_hosts),
                       error_page=error_response)
    return app
