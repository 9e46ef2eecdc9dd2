"""Ground-truth evaluation of an embedded-world atlas: does the detector find the planted blindspots?

DESIGN.md sections 2b and 6. The truth is exact: every image of the world (real and
planted) is annotated with the world concepts it shows, and the real and generated
image of an item share a caption, so a world concept's change is a paired comparison.

- **Matching** is one-to-one per SAE concept: each SAE concept stands for the world
  concept it detects best (AUROC of its energy on the atlas's real images, from the
  analyze stage); it *detects* it when that AUROC is at least ``min_auroc``.
- **True change** of a world concept under a generator: its paired presence in the real
  vs the generated image of every item, tested with McNemar's exact test (the lost and
  gained items are Binomial(n, 1/2) under no change) and Benjamini-Hochberg over the
  world concepts at the atlas's ``analysis.fdr``; its size is the log-odds change
  ``logit(f_gen) - logit(f_real)`` (counts + 1/2). A change inside the sampling noise is
  not a change, whatever its size.
- **recall**: of the planted effects that really changed their concept (significant, in
  the planted direction; an "add" the captions leave no room for changes nothing and is
  listed as ineffective), the share found: some SAE concept that detects the planted
  world concept is flagged in the planted direction (the atlas's gated flags).
- **false alarms**: flagged SAE concepts not backed by the truth: the concept detects no
  world concept, or its world concept is neither planted in the flag's direction nor
  significantly changed in that direction.
- **Spearman**: over the world concepts the lens detects, rank correlation of the delta
  of each one's best detector with its true log-odds change. Beside it, as a diagnostic,
  the same correlation of ``relative_delta``: delta's one T for all concepts ranks a
  concept with more energy as a larger change for the same relative shift, which the
  log-odds (a relative measure) does not.
- **null flags**: the atlas's null controls (real half vs real half, generators marked
  ``control``): every flag there is false by construction.
- **detectability**: per world concept, its prior, the SAE concept that detects it best
  and that AUROC; the lens sees the world when every concept with prior >= 2% is
  detected at AUROC >= 0.9.

A diagnostic, never a headline: the *explained* change of each SAE concept (a
least-squares model of its energy from the world annotations of the real images,
applied to the generators' annotations). A randomly rotated lens scores well on it
(its concepts are mixtures, and a mixture's change is explained by its parts), which is
why recall, false alarms and Spearman above are matched one-to-one instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
from scipy.stats import binom, spearmanr

from precompute.analysis.labels import auroc_matrix
from precompute.analysis.significance import benjamini_hochberg
from precompute.atlas.writer import ATLAS_DB
from precompute.errors import AtlasError

MIN_AUROC = 0.75
DETECTED_AUROC = 0.9  # the lens sees a world concept from this AUROC on
DETECTABLE_PRIOR = 0.02  # world concepts at least this common must be detected


@dataclass(frozen=True)
class Detection:
    """How well the lens sees one world concept."""

    world_concept: str
    family: str
    prior: float
    concept: int | None  # the SAE concept that detects it best
    auroc: float | None

    @property
    def detected(self) -> bool:
        return self.auroc is not None and self.auroc >= DETECTED_AUROC


@dataclass(frozen=True)
class GeneratorScore:
    """The headline metrics of one planted generator (module docstring)."""

    source_id: str
    control: bool
    planted: int  # planted effects that really changed their concept
    found: int
    recall: float | None
    flagged: int
    false_alarms: int
    false_alarm_rate: float | None
    spearman: float | None
    spearman_concepts: int  # world concepts in the Spearman (detected by the lens)
    spearman_relative: float | None  # diagnostic: the same rank correlation on relative_delta
    missed: list[str]
    ineffective: list[str]  # planted effects whose concept did not measurably change
    diagnostic: dict = field(default_factory=dict)  # the explained-truth numbers (not a headline)


@dataclass(frozen=True)
class Drawing:
    """How recognisably a generator draws one world concept its captions ask for (module docstring)."""

    world_concept: str
    asked: int  # captions that state it
    auroc_real: float | None  # its detector's energy against "the caption states it", real images
    auroc_generated: float | None  # the same on the generator's images

    @property
    def draws(self) -> bool:
        """The generator's images show it when asked: its detector tells them apart at AUROC >= 0.75."""
        return self.auroc_generated is not None and self.auroc_generated >= MIN_AUROC

    @property
    def recognisable(self) -> bool:
        """Drawn about as recognisably as the real images show it (AUROC within 0.1 of theirs)."""
        return self.draws and self.auroc_real is not None and self.auroc_generated >= self.auroc_real - 0.1


@dataclass(frozen=True)
class WorldEvaluation:
    atlas: str
    temperature: float
    fdr: float
    min_auroc: float
    lens_trained_here: bool  # the output-lens SAE was trained on this atlas's real images
    detectability: list[Detection]
    generators: list[GeneratorScore]
    null_controls: list[dict]
    drawing: dict[str, list[Drawing]] = field(default_factory=dict)  # generators without annotations (a model)

    @property
    def null_flags(self) -> int:
        return int(sum(row["flagged"] for row in self.null_controls))

    @property
    def undetected(self) -> list[Detection]:
        """World concepts at least ``DETECTABLE_PRIOR`` common that no SAE concept detects at ``DETECTED_AUROC``."""
        return [d for d in self.detectability if d.prior >= DETECTABLE_PRIOR and not d.detected]

    def to_dict(self) -> dict:
        document = asdict(self)
        for row, detection in zip(document["detectability"], self.detectability):
            row["detected"] = detection.detected
        document["null_flags"] = self.null_flags
        document["undetected"] = [d.world_concept for d in self.undetected]
        for source_id, rows in self.drawing.items():
            for row, drawing in zip(document["drawing"][source_id], rows):
                row.update(draws=drawing.draws, recognisable=drawing.recognisable)
        return json_safe(document)


def json_safe(value):
    """NaN and infinities as None, recursively: ``json.dumps`` of the result is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def _query(db: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return db.execute(sql, params or []).fetchall()


def open_world_atlas(atlas: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a world atlas with an analysis; ``AtlasError`` saying what is missing."""
    path = Path(atlas) / ATLAS_DB
    if not path.is_file():
        raise AtlasError(f"{atlas} is not an atlas ({ATLAS_DB} not found)")
    db = duckdb.connect(str(path), read_only=True)
    if _query(db, "SELECT count(*) FROM world_concepts")[0][0] == 0:
        db.close()
        raise AtlasError(f"{atlas} was not built from the embedded world: there is no ground truth to score")
    if _query(db, "SELECT count(*) FROM concept_stats")[0][0] == 0:
        db.close()
        raise AtlasError(f"{atlas} has no blindspot analysis: run the train, encode and analyze stages")
    return db


def evaluate_world(atlas: Path, min_auroc: float = MIN_AUROC) -> WorldEvaluation:
    """Score every planted generator of a world atlas against the truth (module docstring)."""
    with open_world_atlas(atlas) as db:
        info = dict(_query(db, "SELECT key, value FROM atlas_info"))
        config = json.loads(info["config"])
        fdr = float(config["analysis"]["fdr"])
        temperature = float(info["temperature"])
        world = [r[0] for r in _query(db, "SELECT concept FROM world_concepts ORDER BY concept")]
        detectability = _detectability(db)
        planted = [r[0] for r in _query(db, "SELECT source_id FROM sources WHERE kind = 'planted' ORDER BY 1")]
        weights = _explanation(db, world)
        real = _annotation_means(db, "real", world)
        scores = []
        for source_id in planted:
            truth = true_changes(db, source_id, world, fdr)
            score = _score(db, source_id, truth, detectability, min_auroc)
            shift = _annotation_means(db, source_id, world) - real
            diagnostic = _explained_scores(db, source_id, shift, weights, temperature)
            scores.append(GeneratorScore(**{**asdict(score), "diagnostic": diagnostic}))
        modelled = [r[0] for r in _query(db, """SELECT source_id FROM sources s WHERE kind NOT IN ('real', 'planted')
                                                 AND NOT EXISTS (SELECT 1 FROM world_annotations a
                                                                 WHERE a.source_id = s.source_id) ORDER BY 1""")]
        drawing = {source_id: drawing_of(db, source_id, detectability) for source_id in modelled}
        nulls = [dict(zip(("control", "kind", "pairs", "live", "flagged", "flagged_paper", "min_q"), r))
                 for r in _query(db, "SELECT control, kind, pairs, live, flagged, flagged_paper, min_q "
                                     "FROM null_controls ORDER BY kind DESC, control")]
    return WorldEvaluation(atlas=str(atlas), temperature=temperature, fdr=fdr, min_auroc=min_auroc,
                           lens_trained_here=config["encode"].get("sae") is None, detectability=detectability,
                           generators=scores, null_controls=nulls, drawing=drawing)


def _detectability(db: duckdb.DuckDBPyConnection) -> list[Detection]:
    rows = _query(db, """SELECT w.concept, w.family, w.prior_frequency, d.concept, d.auroc
                         FROM world_concepts w LEFT JOIN world_detection d
                              ON d.world_concept = w.concept AND d.rank = 0
                         ORDER BY w.prior_frequency DESC, w.concept""")
    return [Detection(name, family, float(prior), None if c is None else int(c), None if a is None else float(a))
            for name, family, prior, c, a in rows]


@dataclass(frozen=True)
class TrueChange:
    """Per world concept (arrays over ``world``): paired counts, significance and log-odds change."""

    world: list[str]
    real: np.ndarray  # images showing it, real
    generated: np.ndarray
    lost: np.ndarray  # items whose real image shows it and generated image does not
    gained: np.ndarray
    q_value: np.ndarray
    log_odds: np.ndarray
    fdr: float

    @property
    def direction(self) -> np.ndarray:
        """-1 significantly fewer, +1 significantly more, 0 no measurable change."""
        return np.where(self.q_value <= self.fdr, np.sign(self.gained - self.lost), 0).astype(int)

    def of(self, world_concept: str) -> int:
        return int(self.direction[self.world.index(world_concept)])


def true_changes(db: duckdb.DuckDBPyConnection, source_id: str, world: list[str], fdr: float) -> TrueChange:
    """McNemar's exact test of every world concept's paired presence, real vs ``source_id``, with BH."""
    n = _query(db, "SELECT n_images FROM sources WHERE source_id = 'real'")[0][0]
    counts = {w: [0, 0, 0, 0] for w in world}  # real, generated, lost, gained
    for concept, real, generated, lost, gained in _query(db, """
            WITH r AS (SELECT item_id, concept FROM world_annotations WHERE source_id = 'real'),
                 g AS (SELECT item_id, concept FROM world_annotations WHERE source_id = ?)
            SELECT coalesce(r.concept, g.concept), count(r.item_id), count(g.item_id),
                   count(*) FILTER (WHERE g.item_id IS NULL), count(*) FILTER (WHERE r.item_id IS NULL)
            FROM r FULL OUTER JOIN g ON r.item_id = g.item_id AND r.concept = g.concept GROUP BY 1""", [source_id]):
        counts[concept] = [real, generated, lost, gained]
    real, generated, lost, gained = (np.array([counts[w][i] for w in world], dtype=np.float64) for i in range(4))
    discordant = lost + gained
    p = np.where(discordant > 0, np.minimum(1.0, 2.0 * binom.cdf(np.minimum(lost, gained), discordant, 0.5)), 1.0)
    q = benjamini_hochberg(p)
    log_odds = _logit((generated + 0.5) / (n + 1)) - _logit((real + 0.5) / (n + 1))
    return TrueChange(world, real, generated, lost, gained, q, log_odds, fdr)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _score(db, source_id: str, truth: TrueChange, detectability: list[Detection], min_auroc: float) -> GeneratorScore:
    control = bool(_query(db, "SELECT coalesce(any_value(control), false) FROM source_summary WHERE source_id = ?",
                          [source_id])[0][0])
    stats = _query(db, """SELECT s.concept, c.world_concept, c.world_auroc, s.delta, s.suppressed, s.exaggerated,
                                 s.relative_delta
                          FROM concept_stats s JOIN concepts c USING (concept)
                          WHERE s.source_id = ? AND NOT c.is_dead""", [source_id])
    effects = _query(db, "SELECT concept, effect FROM planted_effects WHERE source_id = ? ORDER BY concept",
                     [source_id])
    sees = [(w, sup, exa) for _, w, auc, _, sup, exa, _ in stats
            if w is not None and auc is not None and auc >= min_auroc]
    found, planted, missed, ineffective = 0, 0, [], []
    planted_direction = {}
    for concept, effect in effects:
        direction = -1 if effect == "suppress" else 1
        planted_direction[concept] = direction
        if truth.of(concept) != direction:
            ineffective.append(f"{effect} {concept}")
            continue
        planted += 1
        hit = any(w == concept and (sup if direction < 0 else exa) for w, sup, exa in sees)
        found += hit
        if not hit:
            missed.append(f"{effect} {concept}")
    flagged = [(w, auc, -1 if sup else 1) for _, w, auc, _, sup, exa, _ in stats if sup or exa]
    false_alarms = 0
    for world, auc, direction in flagged:
        detects = world is not None and auc is not None and auc >= min_auroc
        backed = detects and (planted_direction.get(world) == direction or truth.of(world) == direction)
        false_alarms += not backed
    # one point per world concept the lens detects: the delta (and relative delta) of its best detector against
    # its true change
    deltas = {concept: (d, r) for concept, _, _, d, _, _, r in stats}
    points = [(*deltas[d.concept], truth.log_odds[truth.world.index(d.world_concept)]) for d in detectability
              if d.auroc is not None and d.auroc >= min_auroc and d.concept in deltas]
    rho = rho_relative = None
    if len(points) >= 3:
        x, relative, y = np.array(points).T
        rho, rho_relative = (float(spearmanr(v, y).statistic) if v.std() > 0 and y.std() > 0 else None
                             for v in (x, relative))
    return GeneratorScore(
        source_id=source_id, control=control, planted=planted, found=found,
        recall=found / planted if planted else None, flagged=len(flagged), false_alarms=false_alarms,
        false_alarm_rate=false_alarms / len(flagged) if flagged else None, spearman=rho,
        spearman_concepts=len(points), spearman_relative=rho_relative, missed=missed, ineffective=ineffective,
    )


def drawing_of(db: duckdb.DuckDBPyConnection, source_id: str, detectability: list[Detection]) -> list[Drawing]:
    """Per world concept its captions state, how well its detector (the lens's best SAE concept for it) tells the
    images whose caption asks for it from the others, on the real images and on ``source_id``'s.

    A generator without annotations (a trained model) has no truth of its own, but its
    captions say what it was asked for: a concept it draws as well as the data shows it
    is told apart about as well on its images as on the real ones.
    """
    from precompute.world.captions import parse_caption

    items = _query(db, """SELECT i.item_id, i.caption FROM items i JOIN images g ON g.item_id = i.item_id
                          AND g.source_id = ? ORDER BY i.position""", [source_id])
    row_of = {item: row for row, (item, _) in enumerate(items)}
    stated: dict[str, np.ndarray] = {}
    for row, (_, caption) in enumerate(items):
        said = parse_caption(caption)
        for name in [v for k, v in said.items() if k != "extras"] + list(said.get("extras", ())):
            stated.setdefault(name, np.zeros(len(items), dtype=bool))[row] = True
    rows = []
    for detection in detectability:
        asked = stated.get(detection.world_concept)
        if detection.concept is None or asked is None or asked.all():
            continue
        scores = []
        for side in ("real", source_id):
            energy = np.zeros(len(items))
            for item, value in _query(db, """SELECT i.item_id, e.energy FROM energies e JOIN images i USING (image_id)
                                             WHERE e.source_id = ? AND e.concept = ?""", [side, detection.concept]):
                if item in row_of:
                    energy[row_of[item]] = value
            scores.append(energy)
        auc = auroc_matrix(np.stack(scores, axis=1), asked[:, None])[:, 0]
        rows.append(Drawing(detection.world_concept, int(asked.sum()), float(auc[0]), float(auc[1])))
    return rows


# --- the explained-truth diagnostic -------------------------------------------------------------------------


def _annotation_means(db: duckdb.DuckDBPyConnection, source_id: str, world: list[str]) -> np.ndarray:
    """The share of ``source_id``'s images annotated with each world concept."""
    shares = dict(_query(db, """SELECT a.concept, count(*) / max(s.n_images) FROM world_annotations a
                                JOIN sources s USING (source_id) WHERE a.source_id = ? GROUP BY a.concept""",
                         [source_id]))
    return np.array([shares.get(w, 0.0) for w in world])


def _explanation(db: duckdb.DuckDBPyConnection, world: list[str]) -> np.ndarray:
    """Least-squares weights (world concepts + intercept, K) of every SAE concept's energy on the real images.

    Normal equations from sums: A^T A from annotation co-occurrence counts, A^T Y from
    energy sums per (world concept, SAE concept); solved by least squares, because
    exclusive families (one count per image) make A^T A singular. The predictions that
    matter, differences of mean annotation vectors, do not depend on that choice.
    """
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
    return np.linalg.lstsq(gram, moments, rcond=None)[0]


def _explained_scores(db: duckdb.DuckDBPyConnection, source_id: str, shift: np.ndarray, weights: np.ndarray,
                      temperature: float) -> dict:
    """Unexplained alarms and explained Spearman of one generator; ``shift``: the generator's mean
    annotation vector minus the real images'."""
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
    rho = None
    if concepts.size >= 3 and measured.std() > 0 and implied.std() > 0:
        rho = float(spearmanr(measured, implied).statistic)
    return {"unexplained_alarms": unexplained,
            "unexplained_alarm_rate": unexplained / int(flagged.sum()) if flagged.any() else None,
            "spearman_explained": rho}
