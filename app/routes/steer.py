"""Steering: POST /api/steer runs (or finds in the cache) a steer; the panel at /steer does the same from its URL.

The work happens in ``backend.steering.service``; its errors carry their HTTP status and the
app's one handler answers them: bad inputs 422, a full queue 429 with Retry-After, a
request past the time limit 503, an atlas without an internal lens 409. The panel's
result fragment (``/steer/result``) carries the same status codes, with the reason
written in the fragment (a full queue retries by itself after Retry-After).

A sweep (``/steer/sweep``, JSON twin ``/api/steer/sweep``, both GET with the panel's
parameters) is named by those parameters: the first call starts it in the background
and every call answers its progress (202 while it runs; the fragment polls itself)
until the dose-response is there (200). A steer of a sweep past the time limit is
listed as failed, so a long sweep never ends in a 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict

from app.deps import AtlasDep, TemplatesDep, UserLabelsDep
from app.render import render
from backend.atlas import NotFound
from backend.steering.inputs import SteeringInputError, SteerRequest
from backend.steering.page import FIELDS, labelled_result, panel_data, request_fields, sweep_job, sweep_view
from backend.steering.service import SteeringService, SteeringTimeout, SteeringUnavailable
from precompute.errors import BlindspotError

router = APIRouter(tags=["steering"])

IMAGE_ROUTE = "/api/steer/images/{key}.png"
WAIT_GRACE_S = 30.0  # the worker stops a request at its time limit; this only guards against a stuck worker


class SteerBody(BaseModel):
    """The request; values are checked by the service, which names what it expected for each."""

    model_config = ConfigDict(extra="forbid")

    generator: str | None = None
    prompt: Any = None
    features: Any = None
    mode: Any = "scale"
    seed: Any = 0
    steps: Any = None
    guidance: Any = None
    size: Any = None
    step_range: Any = None
    conditional_only: Any = True
    concepts: Any = []


def service_for(request: Request, generator: str | None) -> SteeringService:
    """The steering service of ``generator`` (the only one when not named); 409 when the atlas cannot steer."""
    services: dict[str, SteeringService] = request.app.state.steering
    if not services:
        raise SteeringUnavailable(request.app.state.steering_unavailable or "this atlas cannot steer")
    if generator is None:
        if len(services) > 1:
            raise SteeringInputError(f"name the generator to steer: one of {sorted(services)}")
        return next(iter(services.values()))
    if generator not in services:
        raise NotFound(f"no internal lens for generator {generator!r}; steerable: {sorted(services)}")
    return services[generator]


def with_urls(result: dict[str, Any]) -> dict[str, Any]:
    for side in ("baseline", "steered"):
        result[side]["url"] = IMAGE_ROUTE.format(key=result[side]["key"])
    return result


@router.get("/api/steer")
def steering_status(request: Request) -> dict[str, Any]:
    """Which generators can be steered, and the bounds a request must keep."""
    services: dict[str, SteeringService] = request.app.state.steering
    return {"generators": {name: {"point": s.parts.point, "features": s.n_features, "concepts": s.n_concepts,
                                  "steps": s.parts.generator.steps, "guidance": s.parts.generator.guidance,
                                  "size": list(s.default_size())} for name, s in services.items()},
            "unavailable": request.app.state.steering_unavailable,
            "limits": asdict(next(iter(services.values())).limits) if services else None}


@router.post("/api/steer")
async def steer(body: SteerBody, request: Request) -> dict[str, Any]:
    """Generate the prompt unsteered and steered (same seed) and report the target concepts' energies in both."""
    service = service_for(request, body.generator)
    return with_urls(await run_steer(service, service.request(**body.model_dump(exclude={"generator"}))))


async def run_steer(service: SteeringService, steer_request: SteerRequest) -> dict[str, Any]:
    """The cached result, or a new one from the worker: ``SteeringBusy`` (429) when its queue is full,
    ``SteeringTimeout`` (503) past the time limit."""
    result = await run_in_threadpool(service.cached, steer_request)
    if result is None:
        future = service.submit(steer_request)
        try:
            limit = service.limits.timeout_s
            result = await asyncio.wait_for(asyncio.wrap_future(future), limit + WAIT_GRACE_S if limit else None)
        except SteeringTimeout:
            raise
        except TimeoutError:  # the guard above
            raise SteeringTimeout("the steering request timed out") from None
    return result


def panel_params(request: Request) -> dict[str, Any]:
    """The panel's state from the URL (``concept`` may repeat; otherwise the last value of a name counts, so a
    checkbox after its hidden "false" wins); anything else in the query is ignored."""
    query = request.query_params
    params: dict[str, Any] = {name: (query.getlist(name) or [None])[-1] for name in FIELDS if name != "concept"}
    params["concept"] = query.getlist("concept")
    return params


@router.get("/steer", response_class=HTMLResponse)
def steer_panel(request: Request, atlas: AtlasDep, templates: TemplatesDep) -> HTMLResponse:
    """The steering panel, filled from the URL; a complete form runs its steer as soon as the page loads."""
    data = panel_data(atlas, request.app.state.steering, request.app.state.steering_unavailable, panel_params(request))
    return render(request, templates, "steer.html", "_steer.html", data)


@router.get("/steer/result", response_class=HTMLResponse)
async def steer_result(request: Request, atlas: AtlasDep, templates: TemplatesDep,
                       labels: UserLabelsDep) -> HTMLResponse:
    """The baseline and steered images with the measured effect, or why there are none (same status as the API)."""
    params = panel_params(request)
    status, data = 200, {"retry_url": str(request.url.path) + "?" + request.url.query}
    try:
        service = service_for(request, params["generator"])
        result = await run_steer(service, service.request(**request_fields(params)))
        data["result"] = labelled_result(atlas, with_urls(result), labels)
    except BlindspotError as exc:  # the reason in the panel, with the status the API answers
        status, data["error"] = exc.status, str(exc)
        data["retry_after"] = (exc.headers() or {}).get("Retry-After")
    return templates.TemplateResponse(request, "_steer_result.html", data, status_code=status)


SWEEP_POLL_S = 1  # how often the panel asks a running sweep for its progress


def _sweep_status(request: Request, atlas) -> dict[str, Any]:
    params = panel_params(request)
    service = service_for(request, params["generator"])
    return sweep_job(atlas, service, params).status()


@router.get("/api/steer/sweep")
async def steer_sweep_status(request: Request, atlas: AtlasDep) -> JSONResponse:
    """Start (or find) the sweep of the panel's parameters and answer its progress: 202 while it runs, 200 with
    the dose-response of both arms when done; a sweep already at the limit of running ones is 429."""
    status = await run_in_threadpool(_sweep_status, request, atlas)
    return JSONResponse(status, status_code=200 if status["status"] == "done" else 202)


@router.get("/steer/sweep", response_class=HTMLResponse)
async def steer_sweep(request: Request, atlas: AtlasDep, templates: TemplatesDep,
                      labels: UserLabelsDep) -> HTMLResponse:
    """The sweep's fragment: its progress (polling itself every second) or, when done, the dose-response chart."""
    status, data = 200, {"poll_url": str(request.url.path) + "?" + request.url.query, "poll_s": SWEEP_POLL_S}
    try:
        sweep = await run_in_threadpool(_sweep_status, request, atlas)
        data.update(sweep_view(atlas, sweep, labels))
        status = 200 if sweep["status"] == "done" else 202
    except BlindspotError as exc:  # the reason in the panel, with the status the API answers
        status, data["error"] = exc.status, str(exc)
        data["retry_after"] = getattr(exc, "retry_after", None)
    return templates.TemplateResponse(request, "_steer_sweep.html", data, status_code=status)


@router.get(IMAGE_ROUTE, response_class=FileResponse)
def steer_image(key: str, request: Request) -> FileResponse:
    """A cached baseline or steered image, by its key (nothing outside the steering cache is reachable)."""
    services: dict[str, SteeringService] = request.app.state.steering
    for service in services.values():
        try:
            return FileResponse(service.image_path(key), media_type="image/png",
                                headers={"Cache-Control": "max-age=86400, immutable"})
        except NotFound:
            continue
    raise NotFound(f"no steering image {key!r}")
