"""Ground-truth evaluation of an embedded-world atlas: does the detector find the planted blindspots?

DESIGN.md section 6. Each SAE concept is matched to the world concept it detects best
(AUROC of its energy on the real images, computed by the analyze stage). For every
planted generator the truth is exact: the world annotations of its images give the
frequency of every world concept, so ``true_change[c] = freq_gen[c] - freq_real[c]``.

- recall: a planted effect (suppress X / add Z) is found when a concept matched to X
  (to Z) is flagged suppressed (exaggerated) at the analysis thresholds (0.1 / 0.9);
- false alarms: the share of flagged concepts that are not backed by the truth: no
  match of sufficient AUROC, or a matched world concept whose true change is smaller
  than ``min_change`` or goes the other way;
- Spearman: rank correlation, over the world concepts, between the delta of the SAE
  concept that detects a world concept best and that world concept's true change.

The matching above asks every SAE concept to stand for one world concept, and most do
not: an SAE learns composites (a shape at a size, a shape without a shadow) whose
energy really changes with a planted effect while no single world concept they match
changes. So the evaluation also scores against a truth defined per SAE concept, the
*explained* change: a least-squares model of each concept's energy from the world
annotations (presence of every world concept, plus an intercept) is fitted on the real
images; the change the truth implies is that model applied to the difference of the
mean annotation vectors, generated minus real, and its delta is sigmoid(change / T).
Then

- unexplained alarms: flagged concepts whose explained delta goes the other way from
  0.5, or lies less than half as far from 0.5 as the measured delta;
- explained Spearman: rank correlation of measured and explained delta over the live
  concepts.

The fit needs only sums the atlas can give in SQL (annotation co-occurrence counts and
energy sums per world concept), never an images x concepts matrix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
from scipy.stats import spearmanr

import pyarrow.parquet as pq

from precompute.analysis.stability import delta_stability, match_atoms
from precompute.atlas.writer import ATLAS_DB
from precompute.config import RunConfig
from precompute.errors import AtlasError, ConfigError
from precompute.pipeline import default_work_dir, run_pipeline
from precompute.progress import progress_bar
from precompute.sae import load_sae
from precompute.stages.analyze import analyze_dir
from precompute.stages.common import StageContext
from precompute.stages.encode import lens_digest
from precompute.stages.train import sae_path

MIN_AUROC = 0.75
MIN_CHANGE = 0.02


@dataclass(frozen=True)
class GeneratorScore:
    source_id: str
    planted: int
    found: int
    recall: float
    flagged: int
    false_alarms: int
    false_alarm_rate: float
    spearman: float
    matched_concepts: int
    missed: list[str]
    unexplained_alarms: int = 0  # against the explained truth (module docstring)
    unexplained_alarm_rate: float = 0.0
    spearman_explained: float = float("nan")


def _query(db: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return db.execute(sql, params or []).fetchall()


def evaluate_world(atlas: Path, min_auroc: float = MIN_AUROC, min_change: float = MIN_CHANGE) -> list[GeneratorScore]:
    """Score every planted generator of a world atlas against its planted effects."""
    path = Path(atlas) / ATLAS_DB
    if not path.is_file():
        raise AtlasError(f"{atlas} is not an atlas ({ATLAS_DB} not found)")
    with duckdb.connect(str(path), read_only=True) as db:
        if _query(db, "SELECT count(*) FROM world_concepts")[0][0] == 0:
            raise AtlasError(f"{atlas} was not built from the embedded world: there is no ground truth to score")
        if _query(db, "SELECT count(*) FROM concept_stats")[0][0] == 0:
            raise AtlasError(f"{atlas} has no blindspot analysis: run the train, encode and analyze stages")
        planted = [r[0] for r in _query(db, "SELECT source_id FROM sources WHERE kind = 'planted' ORDER BY 1")]
        world, weights = _explanation(db)
        real = _annotation_means(db, "real", world)
        # the exact change of every world concept's frequency, from the generators' own annotations
        shifts = {source_id: _annotation_means(db, source_id, world) - real for source_id in planted}
        truth = {(source_id, w): float(change) for source_id, shift in shifts.items() for w, change in zip(world, shift)}
        temperature = json.loads(_query(db, "SELECT value FROM atlas_info WHERE key = 'config'")[0][0])[
            "analysis"]["temperature"]
        scores = []
        for source_id in planted:
            stats = _query(db, """
                SELECT c.world_concept, c.world_auroc, s.delta, s.suppressed, s.exaggerated
                FROM concept_stats s JOIN concepts c USING (concept)
                WHERE s.source_id = ? AND NOT c.is_dead""", [source_id])
            effects = _query(db, "SELECT concept, effect FROM planted_effects WHERE source_id = ?", [source_id])
            score = _score(source_id, stats, effects, truth, min_auroc, min_change)
            scores.append(replace(score, **_explained_scores(db, source_id, shifts[source_id], weights, temperature)))
    return scores


def _annotation_means(db: duckdb.DuckDBPyConnection, source_id: str, world: list[str]) -> np.ndarray:
    """The share of ``source_id``'s images annotated with each world concept."""
    shares = dict(_query(db, """SELECT a.concept, count(*) / max(s.n_images) FROM world_annotations a
                                JOIN sources s USING (source_id) WHERE a.source_id = ? GROUP BY a.concept""",
                         [source_id]))
    return np.array([shares.get(w, 0.0) for w in world])


def _explanation(db: duckdb.DuckDBPyConnection) -> tuple[list[str], np.ndarray]:
    """Least-squares weights (world concepts + intercept, K) of every SAE concept's energy on the real images.

    Normal equations from sums: A^T A from annotation co-occurrence counts, A^T Y from
    energy sums per (world concept, SAE concept); solved by least squares, because
    exclusive families (one count per image) make A^T A singular. The predictions that
    matter, differences of mean annotation vectors, do not depend on that choice.
    """
    world = [r[0] for r in _query(db, "SELECT concept FROM world_concepts ORDER BY concept")]
    index = {w: i for i, w in enumerate(world)}
    n_world, n_concepts = len(world), _query(db, "SELECT count(*) FROM concepts")[0][0]
    gram = np.zeros((n_world + 1, n_world + 1))
    for a, b, count in _query(db, """SELECT x.concept, y.concept, count(*) FROM world_annotations x
                                     JOIN world_annotations y ON y.image_id = x.image_id
                                     WHERE x.source_id = 'real' GROUP BY ALL"""):
        gram[index[a], index[b]] = count
    for w, count in _query(db, "SELECT concept, count(*) FROM world_annotations WHERE source_id = 'real' GROUP BY 1"):
        gram[index[w], n_world] = gram[n_world, index[w]] = count
    gram[n_world, n_world] = _query(db, "SELECT n_images FROM sources WHERE source_id = 'real'")[0][0]
    moments = np.zeros((n_world + 1, n_concepts))
    for w, k, total in _query(db, """SELECT a.concept, e.concept, sum(e.energy) FROM energies e
                                     JOIN world_annotations a ON a.image_id = e.image_id
                                     WHERE e.source_id = 'real' GROUP BY ALL"""):
        moments[index[w], k] = total
    for k, total in _query(db, "SELECT concept, sum(energy) FROM energies WHERE source_id = 'real' GROUP BY 1"):
        moments[n_world, k] = total
    weights = np.linalg.lstsq(gram, moments, rcond=None)[0]
    return world, weights


def _explained_scores(db: duckdb.DuckDBPyConnection, source_id: str, shift: np.ndarray, weights: np.ndarray,
                      temperature: float) -> dict:
    """Unexplained alarms and explained Spearman of one generator (see the module docstring); ``shift``: the
    generator's mean annotation vector minus the real images'."""
    explained = 1 / (1 + np.exp(-(shift @ weights[:-1]) / temperature))
    rows = _query(db, """SELECT s.concept, s.delta, s.suppressed, s.exaggerated FROM concept_stats s
                         JOIN concepts c USING (concept) WHERE s.source_id = ? AND NOT c.is_dead ORDER BY 1""",
                  [source_id])
    concepts = np.array([r[0] for r in rows], dtype=np.int64)
    measured = np.array([r[1] for r in rows])
    flagged = np.array([r[2] or r[3] for r in rows], dtype=bool)
    implied = explained[concepts]
    agrees = (np.sign(implied - 0.5) == np.sign(measured - 0.5)) & \
        (np.abs(implied - 0.5) >= 0.5 * np.abs(measured - 0.5))
    unexplained = int((flagged & ~agrees).sum())
    rho = float("nan")
    if concepts.size >= 3 and measured.std() > 0 and implied.std() > 0:
        rho = float(spearmanr(measured, implied).statistic)
    return {"unexplained_alarms": unexplained,
            "unexplained_alarm_rate": unexplained / int(flagged.sum()) if flagged.any() else 0.0,
            "spearman_explained": rho}


def _score(source_id, stats, effects, truth, min_auroc, min_change) -> GeneratorScore:
    matched = [(w, d, sup, exa) for w, auc, d, sup, exa in stats if w is not None and auc is not None and auc >= min_auroc]
    found, missed = 0, []
    for concept, effect in effects:
        hit = any(w == concept and (sup if effect == "suppress" else exa) for w, _, sup, exa in matched)
        found += hit
        if not hit:
            missed.append(f"{effect} {concept}")
    flagged = [(w, auc, sup) for w, auc, _, sup, exa in stats if sup or exa]
    false_alarms = 0
    for world, auc, suppressed in flagged:
        change = truth.get((source_id, world), 0.0) if world is not None else 0.0
        backed = (auc is not None and auc >= min_auroc and abs(change) >= min_change
                  and (change < 0) == bool(suppressed))
        false_alarms += not backed
    # One point per world concept: the delta of the SAE concept that detects it best.
    best: dict[str, tuple[float, float]] = {}
    for world, auc, delta, _, _ in stats:
        if world is not None and auc is not None and auc >= min_auroc and auc > best.get(world, (-1.0, 0.0))[0]:
            best[world] = (auc, delta)
    deltas = np.array([delta for _, delta in best.values()])
    changes = np.array([truth.get((source_id, world), 0.0) for world in best])
    rho = float("nan")
    if len(best) >= 3 and deltas.std() > 0 and changes.std() > 0:
        rho = float(spearmanr(deltas, changes).statistic)
    return GeneratorScore(
        source_id=source_id, planted=len(effects), found=found,
        recall=found / len(effects) if effects else float("nan"),
        flagged=len(flagged), false_alarms=false_alarms,
        false_alarm_rate=false_alarms / len(flagged) if flagged else 0.0,
        spearman=rho, matched_concepts=len(best), missed=missed,
    )


def as_dicts(scores: list[GeneratorScore]) -> list[dict]:
    return [asdict(s) for s in scores]


def evaluate_stability(config: RunConfig, out: Path, seed: int, *, work: Path | None = None,
                       min_cosine: float = 0.7, **pipeline_options) -> dict[str, dict]:
    """Train a second output-lens SAE with ``seed`` on the same tokens and compare delta rankings.

    Runs the train, encode and analyze stages for the config as given (cached when the
    atlas was built from it) and for the same config with ``encode.sae_seed = seed``
    (each lens has its own folders, so nothing is overwritten; the atlas is not
    touched). Returns, per generator, ``delta_stability``.
    """
    if config.encode.sae is not None:
        raise ConfigError("stability compares SAEs this run trains; the config names a fixed SAE (encode.sae)")
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
        a = first_stats[first_stats["source_id"] == source_id].sort_values("concept")["delta"].to_numpy()
        b = second_stats[second_stats["source_id"] == source_id].sort_values("concept")["delta"].to_numpy()
        results[source_id] = delta_stability(a, b, match, cosine, min_cosine)
    return results
