"""Stage analyze: every analysis of the blindspots paper, from the encode stage's outputs.

Per generator against the real set: delta with its interval, relative delta, the
paper's threshold flags and the atlas's flags (the same thresholds gated by a paired
test with false-discovery-rate control), firing frequencies, the delta histogram with skewness, datapoint scores, and the
co-occurrence spectra; the null control (real half vs real half, and any generator
marked ``control``) whose flags are false alarms by construction; across generators:
the Pearson matrix of delta; for the
concepts: a UMAP of the dictionary atoms (one layout for all models, ``analysis.umap_layout``), caption-word
labels and, for the embedded world, the world concept each SAE concept detects best.
Results are Parquet/JSON files in ``WORK/analyze`` that the build stage loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from precompute.analysis.calibration import REAL_HALVES, auto_temperature, real_halves
from precompute.analysis.cooccurrence import eigenvector_alignment, epsilon_grid, l0_curve, top_eigen, top_partners
from precompute.analysis.datapoints import datapoint_scores
from precompute.analysis.delta import FREQUENCY_SHARPENING, concept_stats, delta_histogram, pearson_matrix, sigmoid
from precompute.analysis.energies import energy_histograms
from precompute.analysis.labels import caption_label_evidence, chosen_labels
from precompute.analysis.neighbours import nearest_atoms
from precompute.analysis.umap_layout import umap_layout
from precompute.analysis.world_detection import world_concept_auroc, world_detection
from precompute.config import WorldSourceConfig
from precompute.encoders.lens import Lens
from precompute.errors import BlindspotError
from precompute.fileio import atomic_path, write_text_atomic
from precompute.manifest import Manifest
from precompute.stages.common import StageContext, digest_of
from precompute.stages.encode import ENERGIES, cooccurrence, encode_store, maps_path, open_lens
from precompute.stages.sample import ANNOTATIONS, ITEMS, sample_store

EIGENVECTORS = 100
CARD_PARTNERS = 10  # co-occurrence partners and decoder neighbours kept per concept (the concept card's lists)
# Bumped when the analyze stage's outputs change shape, so older outputs in a work folder are recomputed.
ANALYSIS_VERSION = 3


def analyze_dir(ctx: StageContext, lens_digest: str) -> Path:
    """One analysis folder per output lens (see ``encode.lens_digest``)."""
    return ctx.work / "analyze" / lens_digest


def energy_matrix(ctx: StageContext, lens_digest: str, source_id: str, n_items: int, n_concepts: int) -> sp.csr_array:
    """A set's energies as a CSR (n_items, K), row i = sample position i."""
    table = encode_store(ctx, lens_digest, source_id).read("energies", ENERGIES)
    rows = table.column("position").to_numpy()
    cols = table.column("concept").to_numpy()
    values = table.column("energy").to_numpy()
    return sp.csr_array((values.astype(np.float64), (rows, cols)), shape=(n_items, n_concepts))


def _write(folder: Path, name: str, table: pa.Table) -> None:
    with atomic_path(folder / f"{name}.parquet") as temp:
        pq.write_table(table, temp)


def run_analyze(ctx: StageContext, lens: Lens | None = None) -> dict:
    """Compute every analysis and write it to ``WORK/analyze``; return the manifest."""
    from precompute.stages.images import image_sets

    config, analysis = ctx.config, ctx.config.analysis
    lens = lens or open_lens(ctx)
    folder = analyze_dir(ctx, lens.digest)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest("analyze", "all", analysis.model_dump(mode="json"))
    items = sample_store(ctx).read("items", ITEMS)
    n_items, n_concepts = items.num_rows, lens.n_concepts
    sets = [s.source_id for s in image_sets(ctx)]
    if not sets or sets[0] != "real":
        raise BlindspotError("nothing to analyze: the sample stage has no real images")
    generators = [s for s in sets if s != "real"]
    if not generators:
        raise BlindspotError("nothing to analyze: no generator has finished the generate stage")
    matrices = {s: energy_matrix(ctx, lens.digest, s, n_items, n_concepts) for s in sets}
    real = matrices["real"]
    # a generator is paired with the real images of the items it drew (all of them, unless it skipped some
    # or was asked for its first n_items only): a missing image is not an image without concepts
    drawn = {s.source_id: np.asarray(sorted(s.positions), dtype=np.int64) for s in image_sets(ctx)}
    first_half, second_half = real_halves(real, config.run.seed)
    temperature = (auto_temperature(real, analysis.auto_share) if analysis.temperature == "auto"
                   else float(analysis.temperature))
    controls = {g.name for g in config.generators if g.control}

    def statistics(reference: sp.csr_array, other: sp.csr_array, **options):
        return concept_stats(reference, other, temperature=temperature, suppressed_below=analysis.suppressed_below,
                             exaggerated_above=analysis.exaggerated_above, fdr=analysis.fdr,
                             min_change=analysis.min_change,
                             baseline_quantile=analysis.baseline_quantile, pvalue_rule=analysis.pvalue_rule, **options)

    stats_tables, histogram_rows, summary_rows, datapoint_tables, null_rows = [], [], [], [], []
    deltas = {}
    for name in generators:
        pairs = drawn[name]
        paired_real = sp.csr_array(real[pairs])
        stats = statistics(paired_real, sp.csr_array(matrices[name][pairs]), resamples=analysis.bootstrap,
                           seed=config.run.seed)
        deltas[name] = stats.delta
        stats_tables.append(pa.table({
            "source_id": [name] * n_concepts, "concept": np.arange(n_concepts, dtype=np.int32),
            "e_real": stats.e_real, "e_gen": stats.e_gen, "delta": stats.delta,
            "relative_delta": stats.relative_delta, "nu_real": stats.nu_real, "nu_gen": stats.nu_gen,
            "suppressed": stats.suppressed, "exaggerated": stats.exaggerated,
            "suppressed_paper": stats.suppressed_paper, "exaggerated_paper": stats.exaggerated_paper,
            "p_value": _nullable(stats.p_value), "q_value": _nullable(stats.q_value),
            "ci_low": stats.ci_low, "ci_high": stats.ci_high, "significant": stats.significant,
            "delta_sharp": sigmoid((stats.e_gen - stats.e_real) * FREQUENCY_SHARPENING / temperature),
        }))
        histogram = delta_histogram(stats.delta)
        edges = histogram["edges"]
        histogram_rows += [{"source_id": name, "bin": i, "low": edges[i], "high": edges[i + 1], "count": c}
                           for i, c in enumerate(histogram["counts"])]
        summary_rows.append({"source_id": name, "skewness": histogram["skewness"],
                             "n_suppressed": int(stats.suppressed.sum()),
                             "n_exaggerated": int(stats.exaggerated.sum()),
                             "n_significant": int(stats.significant.sum()),
                             "n_suppressed_paper": int(stats.suppressed_paper.sum()),
                             "n_exaggerated_paper": int(stats.exaggerated_paper.sum()),
                             "n_live": int(stats.live.sum()), "control": name in controls,
                             "n_pairs": int(pairs.size)})
        if name in controls:
            null_rows.append(_null_row(name, "generator", pairs.size, stats))
        scores = datapoint_scores(paired_real, sp.csr_array(matrices[name][pairs]), temperature)
        datapoint_tables.append(pa.table({"source_id": [name] * pairs.size, "position": pairs,
                                          "l2": scores["l2"], "mean_sigmoid": scores["mean_sigmoid"]}))
        manifest.counts[f"{name}.suppressed"] = int(stats.suppressed.sum())
        manifest.counts[f"{name}.exaggerated"] = int(stats.exaggerated.sum())
    halves = statistics(first_half, second_half, uncertainty="none")
    null_rows.insert(0, _null_row(REAL_HALVES, "real-halves", first_half.shape[0], halves))
    manifest.counts["null_flags"] = sum(r["flagged"] for r in null_rows)
    manifest.counts["temperature"] = round(temperature, 6)
    _write(folder, "null_controls", pa.Table.from_pylist(null_rows, schema=NULL_CONTROLS))
    _write(folder, "concept_stats", pa.concat_tables(stats_tables))
    _write(folder, "delta_histograms", pa.Table.from_pylist(histogram_rows))
    _write(folder, "source_summary", pa.Table.from_pylist(summary_rows))
    _write(folder, "datapoints", pa.concat_tables(datapoint_tables))
    names, pearson = pearson_matrix(deltas)
    _write(folder, "model_correlations", pa.Table.from_pylist(
        [{"source_a": a, "source_b": b, "pearson": float(pearson[i, j])}
         for i, a in enumerate(names) for j, b in enumerate(names)]))

    _cooccurrence(ctx, lens, sets, folder)
    upper, counts = energy_histograms(matrices)
    _write(folder, "energy_histograms", pa.concat_tables([_histogram_table(name, c) for name, c in counts.items()]))
    fired = sum(c.sum(axis=1) for c in counts.values()) > 0  # fires on some image of some set
    concepts = _concepts(ctx, lens, real, items.column("caption").to_pylist(), fired)
    concepts = concepts.append_column("energy_max", pa.array(upper, type=pa.float64()))
    with ctx.progress(n_concepts, "decoder neighbours", "concept") as advance:
        ids, cosines = nearest_atoms(lens.sae.dictionary, CARD_PARTNERS, progress=advance)
    _write(folder, "concept_neighbours", _ranked_table("neighbour", "cosine", ids, cosines))
    _write(folder, "concepts", concepts)
    manifest.counts.update(concepts=n_concepts, dead=int((~fired).sum()), generators=len(generators))
    document = manifest.finish(folder / "manifest.json")
    write_text_atomic(folder / "info.json", json.dumps({"digest": analysis_digest(ctx, lens.digest),
                                                         "lens": lens.digest, "grid": list(lens.model.grid),
                                                         "temperature": temperature}))
    return document


NULL_CONTROLS = pa.schema([("control", pa.string()), ("kind", pa.string()), ("pairs", pa.int64()),
                           ("live", pa.int64()), ("flagged", pa.int64()), ("flagged_paper", pa.int64()),
                           ("min_q", pa.float64())])


def _null_row(control: str, kind: str, pairs: int, stats) -> dict:
    """One null control's counts: every flag it gets is a false alarm."""
    q = stats.q_value[np.isfinite(stats.q_value)]
    return {"control": control, "kind": kind, "pairs": int(pairs), "live": int(stats.live.sum()),
            "flagged": int((stats.suppressed | stats.exaggerated).sum()),
            "flagged_paper": int((stats.suppressed_paper | stats.exaggerated_paper).sum()),
            "min_q": float(q.min()) if q.size else None}


def _nullable(values: np.ndarray) -> pa.Array:
    """A float column with NULL where the value is NaN (not computable)."""
    return pa.array(values, type=pa.float64(), mask=~np.isfinite(values))


def _cooccurrence(ctx: StageContext, lens: Lens, sets: list[str], folder: Path) -> None:
    """Appendix H: thresholded l0 against epsilon, top eigenvalues, eigenvector alignment with real."""
    curves, spectra, alignments = [], [], []
    matrices = {}
    for name in sets:
        total, tokens = cooccurrence(ctx, lens.digest, name)
        matrices[name] = total / max(tokens, 1)
    epsilons = epsilon_grid(matrices["real"])
    vectors = {}
    for name, matrix in matrices.items():
        curves += [{"source_id": name, "epsilon": float(e), "l0": int(n)}
                   for e, n in zip(epsilons, l0_curve(matrix, epsilons))]
        values, vectors[name] = top_eigen(matrix, EIGENVECTORS)
        spectra += [{"source_id": name, "rank": i, "eigenvalue": float(v)} for i, v in enumerate(values)]
    for name in sets:
        if name == "real":
            continue
        cosine = eigenvector_alignment(vectors["real"], vectors[name])
        i, j = np.indices(cosine.shape)
        alignments.append(pa.table({"source_id": [name] * cosine.size, "real_rank": i.ravel(),
                                    "gen_rank": j.ravel(), "cosine": cosine.ravel()}))
    _write(folder, "cooccurrence_l0", pa.Table.from_pylist(curves))
    _write(folder, "cooccurrence_spectrum", pa.Table.from_pylist(spectra))
    _write(folder, "eigenvector_alignment", pa.concat_tables(alignments))
    partners = []
    for name, matrix in matrices.items():
        ids, weights = top_partners(matrix, CARD_PARTNERS)
        table = _ranked_table("partner", "weight", ids, weights)
        partners.append(table.add_column(0, "source_id", pa.array([name] * table.num_rows, type=pa.string())))
    _write(folder, "concept_partners", pa.concat_tables(partners))


def _ranked_table(name: str, score: str, ids: np.ndarray, values: np.ndarray) -> pa.Table:
    """(K, top) ids and scores, -1 where absent, as rows (concept, rank, <name>, <score>)."""
    concept, rank = np.nonzero(ids >= 0)
    return pa.table({"concept": concept.astype(np.int32), "rank": rank.astype(np.int32),
                     name: ids[concept, rank].astype(np.int32), score: values[concept, rank].astype(np.float32)})


def _histogram_table(source_id: str, counts: np.ndarray) -> pa.Table:
    """Rows (source_id, concept, counts) for the concepts that fire on some image of the set."""
    concept = np.flatnonzero(counts.sum(axis=1))
    bins = counts.shape[1]
    values = pa.FixedSizeListArray.from_arrays(pa.array(counts[concept].ravel(), type=pa.int32()), bins)
    return pa.table({"source_id": pa.array([source_id] * concept.size, type=pa.string()),
                     "concept": concept.astype(np.int32), "counts": values})


def _concepts(ctx: StageContext, lens: Lens, real: sp.csr_array, captions: list[str], fired: np.ndarray) -> pa.Table:
    """One row per SAE concept: UMAP position, dead flag, labels."""
    n_concepts = lens.n_concepts
    xy = umap_layout(lens.sae.dictionary.detach().float().cpu().numpy(), seed=ctx.config.run.seed)
    words, caption_auroc = caption_label_evidence(real, captions, seed=ctx.config.run.seed)
    columns = {
        "concept": np.arange(n_concepts, dtype=np.int32), "umap_x": xy[:, 0], "umap_y": xy[:, 1],
        "is_dead": ~fired, "caption_words": [", ".join(w for w, _ in top) for top in words],
        "caption_auroc": caption_auroc, "world_concept": [None] * n_concepts,
        "world_auroc": np.full(n_concepts, np.nan),
    }
    if isinstance(ctx.config.source, WorldSourceConfig):
        names, auc = world_auroc(ctx, real)
        best = auc.argmax(axis=1)
        columns["world_concept"] = [names[b] for b in best]
        columns["world_auroc"] = auc[np.arange(n_concepts), best]
        _write(analyze_dir(ctx, lens.digest), "world_detection", world_detection(names, auc))
    vlm = _vlm_labels(ctx, lens, fired)
    columns["vlm_label"] = [vlm.get(k) for k in range(n_concepts)]
    columns.update(chosen_labels(columns["vlm_label"], columns["caption_words"], caption_auroc,
                                 columns["world_concept"], columns["world_auroc"]))
    for name in ("caption_auroc", "label_auroc", "world_auroc"):  # no score: null, not NaN (DuckDB reads it back)
        score = np.asarray(columns[name], dtype=np.float64)
        columns[name] = pa.array(score, mask=np.isnan(score))
    return pa.table(columns)


def _vlm_labels(ctx: StageContext, lens: Lens, fired: np.ndarray) -> dict[int, str]:
    """VLM labels from the best real exemplar of each concept, alpha-masked by its token map (appendix F.2)."""
    settings = ctx.config.labels
    if not settings.vlm_endpoint:
        return {}
    from PIL import Image

    from precompute.analysis.vlm import VLMLabeler, alpha_masked
    from precompute.stages.encode import exemplar_table

    best = {r["concept"]: r["position"] for r in exemplar_table(ctx, lens.digest, "real", 1).to_pylist()
            if fired[r["concept"]]}
    stats = pq.read_table(analyze_dir(ctx, lens.digest) / "concept_stats.parquet").to_pandas()
    urgency = (stats.assign(distance=(stats["delta"] - 0.5).abs()).groupby("concept")["distance"].max())
    chosen = [c for c in urgency.sort_values(ascending=False).index if c in best][:settings.vlm_max_concepts]
    maps = pq.read_table(maps_path(ctx, lens.digest)).to_pandas()
    maps = maps[maps["source_id"] == "real"].set_index(["concept", "position"])
    items = sample_store(ctx).read("items", ITEMS).to_pandas().set_index("position")
    masked = {}
    for concept in chosen:
        key = (concept, best[concept])
        if key not in maps.index:
            continue
        heatmap = np.frombuffer(maps.loc[key, "heatmap"], dtype=np.uint8).reshape(lens.model.grid)
        with Image.open(sample_store(ctx).folder / items.loc[best[concept], "path"]) as image:
            masked[int(concept)] = alpha_masked(image, heatmap.astype(np.float32))
    labeler = VLMLabeler(settings.vlm_endpoint, settings.vlm_model, settings.vlm_api_key_env, settings.vlm_timeout_s)
    return labeler.label_many(masked)


def world_auroc(ctx: StageContext, real: sp.csr_array) -> tuple[list[str], np.ndarray]:
    """AUROC of every SAE concept's energy for every world concept, on the real images (their annotations are
    the sample stage's)."""
    sample = sample_store(ctx)
    items = sample.read("items", ITEMS)
    notes = sample.read("annotations", ANNOTATIONS)
    return world_concept_auroc(real, items.column("item_id").to_pylist(), items.column("position").to_pylist(),
                               notes.column("item_id").to_pylist(), notes.column("concept").to_pylist())


def analysis_digest(ctx: StageContext, lens_digest: str) -> str:
    """What the analysis outputs were computed from: the build stage loads them only if it matches."""
    return digest_of(ANALYSIS_VERSION, ctx.sample_digest(), lens_digest, ctx.config.analysis.model_dump(mode="json"),
                     [g.model_dump(mode="json") for g in ctx.config.generators])


def analysis_is_current(ctx: StageContext, lens_digest: str) -> bool:
    info = analyze_dir(ctx, lens_digest) / "info.json"
    return info.is_file() and json.loads(info.read_text()).get("digest") == analysis_digest(ctx, lens_digest)
