"""Stability of the blindspot ranking across SAE seeds (``blindspot eval stability``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from precompute.analysis.stability import delta_stability, match_atoms
from precompute.config import RunConfig
from precompute.errors import ConfigError
from precompute.pipeline import default_work_dir, run_pipeline
from precompute.progress import progress_bar
from precompute.sae import load_sae
from precompute.stages.analyze import analyze_dir
from precompute.stages.common import StageContext
from precompute.stages.encode import lens_digest
from precompute.stages.train import sae_path


def evaluate_stability(config: RunConfig, out: Path, seed: int, *, work: Path | None = None,
                       min_cosine: float = 0.7, **pipeline_options) -> dict[str, dict]:
    """Train a second output-lens SAE with ``seed`` on the same tokens and compare delta rankings.

    Runs the train, encode and analyze stages for the config as given (cached when the
    atlas was built from it) and for the same config with ``encode.sae_seed = seed``
    (each lens has its own folders, so nothing is overwritten; the atlas is not
    touched). Returns, per generator, ``delta_stability``.
    """
    if config.encode.sae is not None:
        raise ConfigError("stability compares SAEs this run trains; the config names a fixed SAE (encode.sae): "
                          "remove encode.sae to measure the stability of its recipe (encode.sae_variant, "
                          "n_concepts, k, the train settings) trained twice on the atlas's real tokens")
    if seed == config.encode.sae_seed:
        raise ConfigError(f"the second seed must differ from encode.sae_seed ({seed})")
    other = config.model_copy(update={"encode": config.encode.model_copy(update={"sae_seed": seed})})
    work = Path(work) if work else default_work_dir(out)
    sides = []
    for variant in (config, other):
        run_pipeline(variant, out, work=work, stages=["sample", "generate", "train", "encode", "analyze"],
                     **pipeline_options)
        ctx = StageContext(config=variant, work=work, progress=progress_bar)
        digest = lens_digest(ctx)
        stats = pq.read_table(analyze_dir(ctx, digest) / "concept_stats.parquet").to_pandas()
        sides.append((stats, load_sae(sae_path(ctx)).dictionary.detach()))
    (first_stats, first_atoms), (second_stats, second_atoms) = sides
    match, cosine = match_atoms(first_atoms, second_atoms)
    results = {}
    for source_id in sorted(first_stats["source_id"].unique()):
        first = first_stats[first_stats["source_id"] == source_id].sort_values("concept")
        a = first["delta"].to_numpy()
        b = second_stats[second_stats["source_id"] == source_id].sort_values("concept")["delta"].to_numpy()
        live = ((first["nu_real"] > 0) | (first["nu_gen"] > 0)).to_numpy()
        results[source_id] = delta_stability(a, b, match, cosine, min_cosine, live=live)
    return results
