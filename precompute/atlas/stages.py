"""The pipeline's stages, in the order they run, as an atlas records them (``atlas_info.stages``) and the
overview describes them: read by the pipeline to run them, and by the read side to show which a build ran."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageInfo:
    name: str
    description: str
    available: bool
    note: str = ""


# DESIGN.md lists encode before train; here the output-lens SAE is trained (on real-image
# tokens) before the encode stage uses it, so train comes first.
STAGES: tuple[StageInfo, ...] = (
    StageInfo("sample", "real image-caption pairs from the data source", True),
    StageInfo("generate", "one image per caption for each generator (planted, world model, any diffusers pipeline)",
              True),
    StageInfo("train", "the output-lens SAE on real-image tokens, unless the config gives one", True),
    StageInfo("encode", "energy-model tokens -> SAE codes -> per-image energies, exemplars, co-occurrence", True),
    StageInfo("analyze", "delta, blindspots, datapoints, co-occurrence spectra, UMAP, labels", True),
    StageInfo("internal", "internal SAE on captured activations, minority features, concept attribution", True),
    StageInfo("build", "write the atlas atomically", True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
