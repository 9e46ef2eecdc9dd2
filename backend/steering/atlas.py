"""Steering services from an atlas's own layout: ``atlas_info.internal``, ``models/`` and the run config.

The build stage publishes, per generator with an internal lens, its SAE in
``models/internal-sae/<generator>`` and its hook point in ``atlas_info.internal``; the
output lens's SAE in ``models/output-sae``; the whole run config (generator settings,
energy model, energy rule) as JSON in ``atlas_info.config``. The steering cache goes
beside the atlas (``<atlas>.cache/steer``), never into it: the atlas is read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from backend.atlas import Atlas, NotFound
from backend.steering.inputs import SteeringInputError, SteeringLimits
from backend.steering.service import SteeringParts, SteeringService, sae_width
from backend.views.internal import internal_lenses
from precompute.config import DiffusersGeneratorConfig, WorldModelGeneratorConfig, WorldSourceConfig, parse_config
from precompute.errors import AtlasError, BlindspotError

OUTPUT_SAE = "models/output-sae"
WORLD_MODEL_FALLBACK_SIZE = 64  # the world's default image side, for a world model run on another source


def default_cache(root: Path) -> Path:
    return root.parent / f"{root.name}.cache" / "steer"


def atlas_parts(atlas: Atlas | Path, generator: str | None = None, *, cache: Path | None = None,
                device: str = "auto") -> SteeringParts:
    """The parts of ``generator``'s steering service (the only generator with an internal lens when None)."""
    opened = atlas if isinstance(atlas, Atlas) else Atlas(Path(atlas))
    try:
        info, lenses = opened.info(), internal_lenses(opened)
        if generator is None:
            if len(lenses) != 1:
                raise SteeringInputError(f"the atlas has an internal lens for {sorted(lenses)}; name the generator")
            generator = next(iter(lenses))
        if generator not in lenses:
            raise NotFound(f"no internal lens for generator {generator!r}; the atlas has {sorted(lenses)}")
        typical = typical_activations(opened, generator, opened.root / lenses[generator]["sae"])
    finally:
        if opened is not atlas:
            opened.close()
    root = opened.root
    config = parse_config(json.loads(info["config"]), base=root, origin=f"{root} atlas_info.config")
    chosen = {g.name: g for g in config.generators}.get(generator)
    if not isinstance(chosen, (WorldModelGeneratorConfig, DiffusersGeneratorConfig)):
        raise AtlasError(f"generator {generator!r} of the atlas is not a diffusion model that can be steered")
    size = None
    if isinstance(chosen, WorldModelGeneratorConfig):  # the generate stage resizes its 32x32 output to the world's
        side = config.source.size if isinstance(config.source, WorldSourceConfig) else WORLD_MODEL_FALLBACK_SIZE
        size = (side, side)
    lens = lenses[generator]
    return SteeringParts(generator=chosen, internal_sae=root / lens["sae"], point=lens["point"],
                         energy_model=config.encode.energy_model, output_sae=root / OUTPUT_SAE,
                         cache=cache or default_cache(root), patch_tokens_only=config.encode.patch_tokens_only,
                         aggregation=config.encode.energy_aggregation,
                         size=size, device=device, typical=typical)


def typical_activations(atlas: Atlas, generator: str, sae: Path) -> tuple[float, ...]:
    """Per feature of the generator's internal SAE its typical activation (``internal_feature_scales``; NaN for a
    feature that never fired, or one the table lacks)."""
    typical = np.full(sae_width(sae, "internal"), np.nan)
    table = atlas.arrow("SELECT feature, typical FROM internal_feature_scales "
                        "WHERE source_id = ? AND typical IS NOT NULL AND feature < ?", [generator, typical.size])
    typical[table.column("feature").to_numpy()] = table.column("typical").to_numpy()
    return tuple(typical.tolist())


def service_for(atlas: Atlas | Path, generator: str | None = None, *, cache: Path | None = None,
                limits: SteeringLimits | None = None, device: str = "auto") -> SteeringService:
    """The steering service for ``generator`` of an atlas with an internal lens (``atlas_info.internal``)."""
    return SteeringService(atlas_parts(atlas, generator, cache=cache, device=device), limits)


def steering_services(atlas: Atlas, **options: Any) -> tuple[dict[str, SteeringService], str | None]:
    """One service per generator with an internal lens, or ``({}, why not)``: an atlas that cannot steer
    (no internal lens, a generator whose weights are gone) still serves everything else."""
    try:
        return {name: service_for(atlas, name, **options) for name in sorted(internal_lenses(atlas))}, None
    except BlindspotError as exc:
        return {}, str(exc)
