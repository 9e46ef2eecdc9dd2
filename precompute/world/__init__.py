"""The embedded world: a synthetic image-caption world whose latent concepts are known.

Definition 1 of the blindspots paper made literal: independent latent concepts with
a Boltzmann prior (``concepts``), a renderer (``render``), captions that state some
of the latents (``captions``), a reproducible data source (``World``), and a
text-to-image stand-in with planted blindspots (``PlantedGenerator``) whose true
per-concept change is known exactly (``truth``).
"""

from precompute.world.captions import compose_caption, make_caption, parse_caption
from precompute.world.concepts import (
    CONCEPT_BY_NAME,
    CONCEPTS,
    EXTRAS,
    FAMILIES,
    FAMILY_MEMBERS,
    Concept,
    Prior,
    Scene,
    concept,
    marginal_frequencies,
    sample_scene,
)
from precompute.world.export import write_samples
from precompute.world.planted import PlantedEffect, PlantedGenerator
from precompute.world.render import RenderResult, render
from precompute.world.truth import concept_frequencies, concept_matrix, true_change
from precompute.world.world import World, WorldSample

__all__ = [
    "CONCEPTS",
    "CONCEPT_BY_NAME",
    "EXTRAS",
    "FAMILIES",
    "FAMILY_MEMBERS",
    "Concept",
    "PlantedEffect",
    "PlantedGenerator",
    "Prior",
    "RenderResult",
    "Scene",
    "World",
    "WorldSample",
    "compose_caption",
    "concept",
    "concept_frequencies",
    "concept_matrix",
    "make_caption",
    "marginal_frequencies",
    "parse_caption",
    "render",
    "sample_scene",
    "true_change",
    "write_samples",
]
