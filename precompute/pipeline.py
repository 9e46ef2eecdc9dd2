"""The pipeline: run a config's stages in order, each resumable, and say which do not exist yet.

Stages (DESIGN.md section 4): sample, generate, encode, train, analyze, internal, build. A stage
that is not built yet is reported as such, never faked; ``build`` publishes whatever
the finished stages produced as an atlas.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from precompute.atlas.schema import SCHEMA_VERSION
from precompute.atlas.writer import ATLAS_DB
from precompute.config import RunConfig
from precompute.errors import ConfigError
from precompute.progress import progress_bar, quiet_library_bars
from precompute.stages.common import SHARD_SIZE, ProgressFactory, StageContext

log = logging.getLogger(__name__)


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


@dataclass
class PipelineReport:
    """What a pipeline run did: stage manifests, and notes on what it could not do."""

    ran: list[str] = field(default_factory=list)
    manifests: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_work_dir(out: Path) -> Path:
    """Where stage outputs live while a run builds ``out``: a sibling ``<out>.work`` folder."""
    out = Path(out).resolve()
    return out.parent / f"{out.name}.work"


def atlas_is_current(out: Path, config: RunConfig) -> bool:
    """True when ``out`` holds an atlas built from exactly this config."""
    path = Path(out) / ATLAS_DB
    if not path.is_file():
        return False
    import duckdb

    try:
        with duckdb.connect(str(path), read_only=True) as db:
            facts = dict(db.execute("SELECT key, value FROM atlas_info "
                                    "WHERE key IN ('config_digest', 'schema_version')").fetchall())
    except duckdb.Error:
        return False
    # an atlas written by an older version of the software is rebuilt, even from the same config
    return facts.get("config_digest") == config.digest() and facts.get("schema_version") == str(SCHEMA_VERSION)


def parse_stages(names: str | Sequence[str] | None) -> list[str]:
    """Validate a ``--stages`` selection (comma-separated or a list)."""
    if names is None:
        return list(STAGE_NAMES)
    chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in chosen if n not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; expected some of: {', '.join(STAGE_NAMES)}")
    return [n for n in STAGE_NAMES if n in chosen]


def run_pipeline(
    config: RunConfig,
    out: Path,
    *,
    work: Path | None = None,
    stages: Sequence[str] | None = None,
    progress: ProgressFactory = progress_bar,
    say: Callable[[str], None] = log.info,
    shard_size: int = SHARD_SIZE,
) -> PipelineReport:
    """Run the chosen stages (default: all) of ``config`` and publish the atlas at ``out``."""
    from precompute.stages.analyze import run_analyze
    from precompute.stages.build import run_build
    from precompute.stages.encode import run_encode
    from precompute.stages.generate import run_generate
    from precompute.stages.sample import run_sample
    from precompute.stages.train import run_train

    chosen = parse_stages(stages)
    quiet_library_bars()
    ctx = StageContext(config=config, work=Path(work) if work else default_work_dir(out), progress=progress,
                       shard_size=shard_size)
    ctx.work.mkdir(parents=True, exist_ok=True)
    (ctx.work / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True))
    # Unknown or unreachable models fail here, before any work.
    if "generate" in chosen:
        from precompute.stages.generate import preflight

        preflight(ctx)
    if {"train", "encode", "analyze"} & set(chosen):
        ctx.energy_model()
    report = PipelineReport()
    lens = None  # the output lens (energy model + SAE), loaded once for encode and analyze
    for stage in STAGES:
        if stage.name not in chosen or (stage.name == "internal" and not config.internal):
            continue  # a config without [[internal]] tables asks for no internal lens
        if not stage.available:
            report.notes.append(f"stage {stage.name} ({stage.description}): not available yet, {stage.note}")
            say(report.notes[-1])
            continue
        say(f"stage {stage.name}: {stage.description}")
        if stage.name == "sample":
            report.manifests.append(run_sample(ctx))
        elif stage.name == "generate":
            manifests, notes = run_generate(ctx)
            report.manifests.extend(manifests)
            for note in notes:
                say(note)
            report.notes.extend(notes)
        elif stage.name == "train":
            trained = run_train(ctx)
            if trained is None:
                say("using the SAE the config names")
            else:
                report.manifests.append(trained)
        elif stage.name in ("encode", "analyze"):
            from precompute.stages.encode import Lens

            lens = lens or Lens(ctx)
            if stage.name == "encode":
                report.manifests.extend(run_encode(ctx, lens))
            else:
                report.manifests.append(run_analyze(ctx, lens))
        elif stage.name == "internal":
            from precompute.stages.internal import run_internal

            report.manifests.extend(run_internal(ctx))
        elif stage.name == "build":
            report.manifests.append(run_build(ctx, Path(out)))
        report.ran.append(stage.name)
    return report
