"""The explorer page: the state of the UMAP view (model, colour, size, selected concept, radius) and what it shows
around the selected concept (its brief, neighbours, co-occurrence edges); the scatter's points are
``backend.explorer``'s binary payload."""

from __future__ import annotations

from typing import Any

from backend.explorer import COLOURS, SIZES, Explorer


def explorer_data(explorer: Explorer, model: str | None, colour: str, size: str, concept: int | None,
                  radius: float | None) -> dict[str, Any]:
    """The explorer's state and what it shows around the selected concept."""
    run = explorer.atlas.info().get("run_name", "")
    if not explorer.analysed:
        return {"run_name": run, "analysed": False, "models": explorer.models(), "n_concepts": 0}
    model = explorer.model(model)
    radius = explorer.default_radius if radius is None else radius
    colours = explorer.colours(model)
    if colour not in colours:
        colour = "delta"
    if concept is not None:
        explorer.check_concept(concept)
    return {
        "run_name": run,
        "analysed": True,
        "n_concepts": explorer.n_concepts,
        "models": explorer.models(),
        "colours": {k: COLOURS[k][2] for k in colours},
        "sizes": SIZES,
        "thresholds": explorer.analysis,
        "state": {"model": model, "colour": colour, "size": size, "concept": concept, "radius": radius},
        "points_url": f"/api/explorer/points.bin?model={model}&colour={colour}",
        "selected": explorer.brief(concept, model) if concept is not None else None,
        "neighbours": explorer.neighbours(concept, radius, model) if concept is not None and radius > 0 else [],
        "edges": explorer.edges(concept, model) if concept is not None else {"real": [], "generated": []},
    }
