"""What the analysis views share: which generators an atlas analysed, which one a view shows, bad queries.

A view names a generator by its source id (``?model=planted``); an unknown id is
``NotFound`` (404), a malformed query is ``BadQuery`` (422). Views of an atlas built
without the analyze stage answer with ``analysed = False`` and a hint, never an error.
"""

from __future__ import annotations

from enum import StrEnum

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from backend.atlas import Atlas, NotFound
from precompute.config import AnalysisConfig
from precompute.errors import BlindspotError

NOT_ANALYSED_HINT = ("This atlas was built without the analyze stage, so it has no blindspot statistics yet. "
                     "Rebuild it with every stage: `blindspot precompute CONFIG --out ATLAS`.")


# A CTE of the user's own concept labels (they win over the atlas's), bound as two parallel arrays.
USER_LABELS = "user_labels AS (SELECT unnest(?::INTEGER[]) AS concept, unnest(?::VARCHAR[]) AS label)"


def user_label_params(labels: Mapping[int, str] | None) -> list[list[Any]]:
    """The two bound parameters of ``USER_LABELS``."""
    labels = labels or {}
    return [[int(k) for k in labels], [str(v) for v in labels.values()]]


class FlagRule(StrEnum):
    """Which flags a view shows: the atlas's (the paper's threshold and the FDR-controlled test), or the paper's
    thresholds alone (``suppressed_paper`` / ``exaggerated_paper``), on request."""

    atlas = "atlas"
    paper = "paper"

    def column(self, direction: str) -> str:
        """The ``concept_stats`` column (aliased ``s``) of this rule's flag in ``direction``."""
        if direction not in ("suppressed", "exaggerated"):
            raise BadQuery(f"direction must be 'suppressed' or 'exaggerated', got {direction!r}")
        return f"s.{direction}" if self is FlagRule.atlas else f"s.{direction}_paper"


class BadQuery(BlindspotError):
    """A query parameter that is well-typed but unusable (for example a frequency range whose ends are swapped)."""


def generators(atlas: Atlas) -> list[str]:
    """Every generator's source id, in a stable order."""
    return [r["source_id"] for r in atlas.rows("SELECT source_id FROM sources WHERE source_id != 'real' "
                                               "ORDER BY source_id")]


def resolve_model(atlas: Atlas, model: str | None, models: list[str] | None = None) -> str | None:
    """The generator a view shows: ``model`` when the atlas has it, the first generator when none is asked."""
    models = generators(atlas) if models is None else models
    if model is None or model == "":
        return models[0] if models else None
    if model not in models:
        known = ", ".join(models) or "none"
        raise NotFound(f"no model {model!r} in this atlas (its models: {known})")
    return model


def analysis_settings(atlas: Atlas) -> dict[str, float]:
    """The build's delta temperature (``atlas_info.temperature``: a config's ``"auto"`` resolved), blindspot
    thresholds, false discovery rate, effect-size floor and its baseline quantile (its config's ``[analysis]``; the defaults, the
    paper's T = 0.8, 0.1 and 0.9, an FDR of 0.05 and no floor, for an atlas that does not record them)."""
    info = atlas.info()
    try:
        recorded = json.loads(info.get("config") or "{}").get("analysis", {})
    except (json.JSONDecodeError, AttributeError):
        recorded = {}
    defaults = AnalysisConfig()
    settings = {key: float(recorded.get(key, getattr(defaults, key)))
                for key in ("suppressed_below", "exaggerated_above", "fdr", "min_change")}
    settings["baseline_quantile"] = float(recorded.get("baseline_quantile") or 0.0)  # 0: the floor is of E_real
    temperature = info.get("temperature", recorded.get("temperature", defaults.temperature))
    settings["temperature"] = float(defaults.temperature if temperature == "auto" else temperature)
    return settings


def view_context(atlas: Atlas) -> dict[str, Any]:
    """The facts every analysis page shows: run name, whether it was analysed, its generators."""
    analysed = atlas.analysed()
    return {"run_name": atlas.info().get("run_name", ""), "analysed": analysed, "models": generators(atlas),
            "hint": None if analysed else NOT_ANALYSED_HINT}


def url(path: str, state: dict[str, Any]) -> str:
    """``path`` with the view state as its query (``None`` values left out, booleans as true/false)."""
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in state.items() if v is not None}
    return f"{path}?{urlencode(params)}" if params else path
