"""The steering panel's data: a form whose whole state is the URL, and the result of a steer, labelled.

A steer is written in the URL so that a link reproduces it::

    /steer?generator=world-model&prompt=a+red+circle&features=12:1,5:2&mode=add&seed=0&start=0&stop=10&concept=4&sweep=true

``features`` lists ``id:strength`` pairs (an id alone takes the mode's default
strength; add-mode strengths are multiples of each feature's typical activation);
``start``/``stop`` bound the steered denoising steps (both or neither); ``concept``
(repeatable or comma-separated) names the output-lens concepts whose energy is
measured, the first being the target. Without features, the target concept's proposal
fills them (``backend.views.internal.steer_proposal``), or the panel says why there is none;
without a prompt, the caption of the real image that shows the target most is
proposed, as ``eval steer`` does. ``sweep=true`` adds the dose-response beside a
random-feature control (``backend.steering.sweep``). Values are checked by the steering
service (``backend.steering.inputs``); this module only turns text into the service's
fields and says which part of the text it could not read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from backend.atlas import Atlas
from backend.steering.evaluation import ARMS, concept_prompts, live_concepts
from backend.steering.inputs import DEFAULT_STRENGTH, SteeringInputError
from backend.steering.service import SteeringService
from backend.steering.sweep import SWEEP_FACTORS, SweepJob, sweep_board, sweep_spec
from backend.svg import lines
from backend.views.internal import scored_features, steer_proposal
SERIES = {"attributed": "proposed features", "control": "random features"}  # the sweep chart's lines
TITLE_CHARS = 60  # a longer title would run past the chart's width
FIELDS = ("generator", "prompt", "features", "mode", "seed", "steps", "guidance", "start", "stop", "concept",
          "conditional_only", "sweep")


def parse_features(text: str, mode: str) -> list[list[float | int]]:
    """``"12:10, 5:-3, 7"`` -> ``[[12, 10.0], [5, -3.0], [7, default]]``; a clear error on anything else."""
    entries = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        feature, _, strength = part.partition(":")
        try:
            entries.append([int(feature), float(strength) if strength.strip() else DEFAULT_STRENGTH.get(mode, 1.0)])
        except ValueError:
            raise SteeringInputError(f"features must be written as id:strength pairs separated by commas "
                                     f"(for example 12:10, 5:-3); could not read {part!r}") from None
    if not entries:
        raise SteeringInputError("name at least one internal feature to steer with, as id:strength (for example 12:10)")
    return entries


def parse_concepts(values: list[str]) -> list[int]:
    concepts = []
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    concepts.append(int(part))
                except ValueError:
                    raise SteeringInputError(f"concept must be concept ids separated by commas, got {part!r}") from None
    return concepts


def _checked(params: dict[str, Any]) -> bool:
    """``conditional_only`` from the URL: on when absent (the default), off when it says false, 0, off or nothing."""
    value = params.get("conditional_only")
    return value is None or str(value).lower() not in ("false", "0", "off", "")


def _optional_number(params: dict[str, Any], name: str, kind: type) -> Any:
    text = str(params.get(name) or "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise SteeringInputError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def request_fields(params: dict[str, Any]) -> dict[str, Any]:
    """The steering service's request fields from the panel's URL parameters (the prompt must be filled in)."""
    mode = str(params.get("mode") or "add")
    start, stop = _optional_number(params, "start", int), _optional_number(params, "stop", int)
    if (start is None) != (stop is None):
        raise SteeringInputError("give both the first steered step (start) and the step after the last (stop), "
                                 "or neither to steer every step")
    return {"prompt": params.get("prompt") or "", "features": parse_features(str(params.get("features") or ""), mode),
            "mode": mode, "seed": _optional_number(params, "seed", int) or 0,
            "steps": _optional_number(params, "steps", int), "guidance": _optional_number(params, "guidance", float),
            "step_range": None if start is None else [start, stop],
            "conditional_only": _checked(params),
            "concepts": parse_concepts(params.get("concept") or [])}


def _target(form: dict[str, Any]) -> int | None:
    try:
        first = parse_concepts([form["concept"]])[:1] if form["concept"] else []
    except SteeringInputError:
        first = []
    return first[0] if first else None


def panel_data(atlas: Atlas, services: dict[str, SteeringService], unavailable: str | None,
               params: dict[str, Any]) -> dict[str, Any]:
    """What the panel shows: the form filled from the URL, and whether it is complete enough to run."""
    generators = sorted(services)
    generator = params.get("generator") or (generators[0] if generators else None)
    form = {name: params.get(name) for name in FIELDS}
    form["generator"], form["mode"] = generator, form["mode"] or "add"
    form["concept"] = ",".join(params.get("concept") or [])
    form["conditional_only"] = _checked(params)
    form["sweep"] = str(params.get("sweep") or "").lower() in ("true", "1", "on")
    service = services.get(generator) if generator else None
    target = _target(form)
    proposal = None
    if service is not None and target is not None and not form["features"] and 0 <= target < service.n_concepts:
        proposal = steer_proposal(atlas, generator, target)
        if proposal["features"]:
            form["features"] = ",".join(f"{f['feature']}:{proposal['strength']:g}" for f in proposal["features"])
            form["mode"] = proposal["mode"]
    proposed = None
    if not form["prompt"] and target is not None:
        prompts = concept_prompts(atlas, target, 1)
        if prompts:
            form["prompt"] = proposed = prompts[0]
    defaults = None
    if service is not None:
        defaults = {"steps": service.parts.generator.steps, "guidance": service.parts.generator.guidance,
                    "features": service.n_features, "point": service.parts.point, "limits": service.limits}
    query = {name: form[name] for name in FIELDS if form[name] not in (None, "", [], False)}
    query["conditional_only"] = "true" if form["conditional_only"] else "false"
    query.pop("sweep", None)
    ready = bool(service is not None and form["prompt"] and form["features"])
    return {"generators": generators, "generator": generator, "unavailable": unavailable,
            "unknown_generator": bool(generator and services and service is None), "form": form,
            "defaults": defaults, "proposed_prompt": proposed, "proposal": proposal, "target": target,
            "ready": ready, "result_url": "/steer/result?" + urlencode(query),
            "sweep_url": "/steer/sweep?" + urlencode(query) if ready and form["sweep"] and target is not None else None,
            "sweep_factors": SWEEP_FACTORS}


def sweep_job(atlas: Atlas, service: SteeringService, params: dict[str, Any]) -> SweepJob:
    """The sweep of the panel's steer on its target concept (the first measured one), started if new."""
    fields = request_fields(params)
    if not fields["concepts"]:
        raise SteeringInputError("name the concept to measure (field “measure concepts”): the sweep follows "
                                 "its energy against the strength")
    fields["concepts"] = fields["concepts"][:1]
    request = service.request(**fields)
    spec = sweep_spec(service, request, request.concepts[0], scored_features(atlas, service.generator),
                      live_concepts(atlas))
    return sweep_board(service).get_or_start(spec)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def sweep_view(atlas: Atlas, status: dict[str, Any], user_labels: dict[int, str]) -> dict[str, Any]:
    """A sweep's status for the page: the target's label, and when done the chart of its energy against strength."""
    concept = status["concept"]
    found = atlas.rows("SELECT label FROM concepts WHERE concept = ?", [concept])
    view = {"sweep": status, "label": user_labels.get(concept) or (found[0]["label"] if found else ""),
            "chart": None}
    if status["status"] == "done" and status["baseline_energy"] is not None:
        factors = [0.0, *status["factors"]]
        series = {SERIES[arm]: (factors, [status["baseline_energy"],
                                          *[d[arm]["mean_energy"] if d[arm]["mean_energy"] is not None
                                            else float("nan") for d in status["dose_response"]]])
                  for arm in ARMS}
        strengths = ", ".join(f"{s:g}" for s in status["strengths"])
        view["chart"] = lines(series, emphasise=SERIES["attributed"],
                              x_label=f"strength, as a multiple of the form's ({strengths}); 0 = unsteered",
                              y_label=f"energy, mean of {len(status['seeds'])} seeds",
                              title=_short(f"concept #{concept} {view['label']}", TITLE_CHARS))
    return view


def labelled_result(atlas: Atlas, result: dict[str, Any], user_labels: dict[int, str]) -> dict[str, Any]:
    """The service's result with every concept it mentions labelled (the user's label first)."""
    concepts = sorted({row["concept"] for key in ("effect", "largest_changes") for row in result[key]})
    labels = {}
    if concepts:
        marks = ",".join("?" * len(concepts))
        labels = {r["concept"]: r["label"] for r in atlas.rows(
            f"SELECT concept, label FROM concepts WHERE concept IN ({marks})", concepts)}
    for key in ("effect", "largest_changes"):
        for row in result[key]:
            row["label"] = user_labels.get(row["concept"]) or labels.get(row["concept"]) or ""
    return result
