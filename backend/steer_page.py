"""The steering panel's data: a form whose whole state is the URL, and the result of a steer, labelled.

A steer is written in the URL so that a link reproduces it::

    /steer?generator=world-model&prompt=a+red+circle&features=12:10,5:-3&mode=add&seed=0&start=0&stop=10&concept=4

``features`` lists ``id:strength`` pairs (an id alone takes the mode's default
strength); ``start``/``stop`` bound the steered denoising steps (both or neither);
``concept`` (repeatable or comma-separated) names the output-lens concepts whose
energy is measured. Without a prompt, the caption of the real image that shows the
first concept most is proposed, as ``eval steer`` does. Values are checked by the
steering service (``backend.steering_inputs``); this module only turns text into
the service's fields and says which part of the text it could not read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from backend.atlas import Atlas
from backend.steer_eval import concept_prompts
from backend.steering import SteeringService
from backend.steering_inputs import SteeringInputError

DEFAULT_STRENGTH = {"add": 10.0, "scale": 1.0}  # add: activation units (eval steer's default); scale: doubles
FIELDS = ("generator", "prompt", "features", "mode", "seed", "steps", "guidance", "start", "stop", "concept",
          "conditional_only")


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


def panel_data(atlas: Atlas, services: dict[str, SteeringService], unavailable: str | None,
               params: dict[str, Any]) -> dict[str, Any]:
    """What the panel shows: the form filled from the URL, and whether it is complete enough to run."""
    generators = sorted(services)
    generator = params.get("generator") or (generators[0] if generators else None)
    form = {name: params.get(name) for name in FIELDS}
    form["generator"], form["mode"] = generator, form["mode"] or "add"
    form["concept"] = ",".join(params.get("concept") or [])
    form["conditional_only"] = _checked(params)
    service = services.get(generator) if generator else None
    proposed = None
    if not form["prompt"] and form["concept"]:
        try:
            first = parse_concepts([form["concept"]])[:1]
        except SteeringInputError:
            first = []
        prompts = concept_prompts(atlas, first[0], 1) if first else []
        if prompts:
            form["prompt"] = proposed = prompts[0]
    defaults = None
    if service is not None:
        defaults = {"steps": service.parts.generator.steps, "guidance": service.parts.generator.guidance,
                    "features": service.n_features, "point": service.parts.point, "limits": service.limits}
    query = {name: form[name] for name in FIELDS if form[name] not in (None, "", [])}
    query["conditional_only"] = "true" if form["conditional_only"] else "false"
    return {"generators": generators, "generator": generator, "unavailable": unavailable,
            "unknown_generator": bool(generator and services and service is None), "form": form,
            "defaults": defaults, "proposed_prompt": proposed,
            "ready": bool(service is not None and form["prompt"] and form["features"]),
            "result_url": "/steer/result?" + urlencode(query)}


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
