"""Stage internal: the internal lens of each ``[[internal]]`` generator (RAIGen + DiffLens-style attribution).

For one generator: its captured activations at (point, step) train a Matryoshka
BatchTopK SAE (every spatial position one sample); the coarsest group's features are
scored (frequency, distinctiveness, minority), thinned by greedy NMS, shown by their
top generated images with spatial heatmaps, labelled, and linked to the output lens
by probes that attribute each output-lens concept to internal features. Outputs live
in ``WORK/internal/<digest>`` (the SAE in ``WORK/internal/sae/<digest>``, resumable from
its checkpoints); a folder whose ``info.json`` exists is finished and reused. The
build stage publishes them (``publish_internal``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from precompute.config import GeneratorConfig, InternalConfig
from precompute.errors import BlindspotError, ConfigError
from precompute.fileio import atomic_path, write_text_atomic
from precompute.internal.attribution import ProbeSettings, attribute
from precompute.internal.codes import PooledCodes, feature_maps, pool_codes, train_internal_sae
from precompute.internal.minority import greedy_nms, minority_scores, quantise_maps, top_images
from precompute.internal.semantic import feature_labels, semantic_embeddings
from precompute.manifest import Manifest
from precompute.stages.common import StageContext, digest_of, resolve_device
from precompute.stages.generate import IMAGES, generator_store, read_capture
from precompute.stages.sample import ITEMS, sample_store
from precompute.stages.shards import ShardStore

INTERNAL_SAE = "models/internal-sae"  # inside the atlas: one folder per generator
OUTPUT_LAYOUT = 2  # part of the outputs' key: a folder written by an older layout is made again (its SAE reused)
# output file -> atlas table
OUTPUTS = {"features": "internal_features", "scales": "internal_feature_scales", "exemplars": "internal_exemplars",
           "heatmaps": "internal_heatmaps", "attributions": "attributions", "probes": "attribution_probes"}


@dataclass(frozen=True)
class Target:
    """One ``[[internal]]`` table with its generator, that generator's outputs and the captured step's index."""

    table: InternalConfig
    generator: GeneratorConfig
    store: ShardStore
    step: int  # non-negative denoising step index, as the capture files name it


def _targets(ctx: StageContext) -> list[Target]:
    by_name = {g.name: g for g in ctx.config.generators}
    sample = sample_store(ctx)
    targets = []
    for table in ctx.config.internal:
        generator = by_name[table.generator]
        store = generator_store(ctx, generator)
        if store.indices() != sample.indices():
            raise BlindspotError(f"internal lens of {generator.name!r}: its generate stage has not finished; "
                                 "run the generate stage first")
        targets.append(Target(table, generator, store, table.step % generator.steps))
    return targets


def _lens(ctx: StageContext) -> str | None:
    """The output lens's digest when its SAE exists (the attribution needs its energies), else None."""
    from precompute.stages.encode import lens_digest

    try:
        return lens_digest(ctx)
    except ConfigError:
        return None


def _sae_settings(target: Target) -> dict:
    table = target.table
    return {"point": table.point, "step": target.step, "expansion": table.expansion, "k": table.k,
            "group_fractions": list(table.group_fractions), "aux": table.aux_coefficient, "lr": table.lr,
            "epochs": table.epochs, "batch_size": table.batch_size, "seed": table.seed}


def sae_dir(ctx: StageContext, target: Target) -> Path:
    return ctx.work / "internal" / "sae" / digest_of(target.store.digest, _sae_settings(target))


def result_dir(ctx: StageContext, target: Target, lens: str | None) -> Path:
    """Where one generator's internal-lens outputs live: keyed by its images, the table and the output lens."""
    return ctx.work / "internal" / digest_of(target.store.digest, target.table.model_dump(mode="json"),
                                             target.step, lens, OUTPUT_LAYOUT)


def run_internal(ctx: StageContext) -> list[dict]:
    """Run the internal lens of every ``[[internal]]`` table; return the manifests."""
    lens = _lens(ctx)
    return [_run_target(ctx, target, lens) for target in _targets(ctx)]


def _capture_grid(counts: torch.Tensor, generator: GeneratorConfig) -> tuple[int, int] | None:
    """(rows, cols) of the hooked map when every image kept all its positions, else None."""
    cells = int(counts.max())
    budget = getattr(generator, "capture_budget", None)
    if int(counts.min()) != cells or (budget is not None and cells >= budget):
        return None  # a budget may have cut the grid: the kept positions no longer tile it
    width, height = getattr(generator, "width", None) or 1, getattr(generator, "height", None) or 1
    rows = max(1, round((cells * height / width) ** 0.5))
    if cells % rows:
        rows = max(1, round(cells ** 0.5))
    return (rows, cells // rows) if cells % rows == 0 else (1, cells)


def _write(folder: Path, name: str, table: pa.Table) -> None:
    with atomic_path(folder / f"{name}.parquet") as temp:
        pq.write_table(table, temp)


def _run_target(ctx: StageContext, target: Target, lens: str | None) -> dict:
    table, generator = target.table, target.generator
    folder = result_dir(ctx, target, lens)
    if (folder / "info.json").is_file() and (folder / "manifest.json").is_file():
        return json.loads((folder / "manifest.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest("internal", generator.name, table.model_dump(mode="json"))
    device = resolve_device(getattr(generator, "device", "auto"))
    capture = read_capture(target.store, table.point, target.step)
    positions, items = capture["positions"], capture["image_items"]
    image_of_row = torch.from_numpy(pd.Index(items).get_indexer(capture["position_items"])).long()
    if positions.shape[0] == 0 or bool((image_of_row < 0).any()) or bool((image_of_row.diff() < 0).any()):
        raise BlindspotError(f"{generator.name}: the captured positions of {table.point!r} do not follow its images")
    sae_folder = sae_dir(ctx, target)
    sae, report = train_internal_sae(positions, table, device, sae_folder, ctx.progress)
    with ctx.progress(positions.shape[0], f"internal codes {generator.name}", "pos") as advance:
        pooled = pool_codes(sae, positions, image_of_row, len(items), advance)
    paths = _image_paths(target, items)
    semantic = semantic_embeddings(ctx, table.semantic_model, target.store.digest, paths, device)
    scores = minority_scores(pooled.fired, positions.shape[0], pooled.image_sums, pooled.image_positions,
                             semantic.embeddings)
    kept = greedy_nms(scores.minority, scores.centroids, table.nms_tau)
    rank = torch.full((scores.live.shape[0],), -1, dtype=torch.long)
    rank[kept] = torch.arange(len(kept))
    captions = _captions(ctx, items)
    labels = feature_labels(pooled.image_sums, semantic, captions)
    _write(folder, "features", pa.table({
        "feature": np.arange(rank.shape[0], dtype=np.int32), "frequency": scores.frequency.numpy(),
        "distinctiveness": scores.distinctiveness.numpy(), "minority": scores.minority.numpy(),
        "kept": (rank >= 0).numpy(), "minority_rank": pa.array(rank.numpy(), mask=(rank < 0).numpy(),
                                                               type=pa.int32()),
        "label": labels,
    }))
    typical = pooled.scale.typical.numpy()
    _write(folder, "scales", pa.table({
        "feature": np.arange(typical.size, dtype=np.int32), "fired": pooled.scale.fired.numpy().astype(np.int64),
        "typical": pa.array(typical, mask=np.isnan(typical), type=pa.float64())}))
    grid = _capture_grid(pooled.image_positions, generator)
    n_maps = _write_exemplars(folder, sae, positions, pooled, items, grid, table.exemplars)
    if grid is None:
        manifest.notes.append(f"no feature heatmaps: capture_budget kept only part of {table.point!r}'s positions; "
                              "unset it (or raise it above the map's size) for heatmaps")
    probes = _write_attributions(ctx, target, lens, folder, pooled, items, manifest, device)
    final = report.get("final", {})
    manifest.counts.update(
        images=len(items), positions=positions.shape[0], channels=positions.shape[1], features=sae.n_concepts,
        scored=scores.live.shape[0], dead=int((~scores.live).sum()), kept=len(kept), heatmaps=n_maps,
        explained_variance=round(pooled.explained_variance, 4),
        explained_variance_coarse=round(pooled.explained_variance_coarse, 4),
        train_steps=report.get("steps", 0), train_l0=round(float(final.get("l0", float("nan"))), 3), **probes)
    info = {"generator": generator.name, "point": table.point, "step": target.step, "sae": str(sae_folder),
            "channels": positions.shape[1], "grid": list(grid) if grid else None,
            "scored_features": int(scores.live.shape[0]), "lens": lens}
    document = manifest.finish(folder / "manifest.json")
    write_text_atomic(folder / "info.json", json.dumps(info, sort_keys=True))
    return document


def _image_paths(target: Target, items: list[str]) -> list[Path]:
    images = target.store.read("images", IMAGES).to_pandas().set_index("item_id")
    return [target.store.folder / p for p in images.loc[items, "path"]]


def _captions(ctx: StageContext, items: list[str]) -> list[str]:
    sample = sample_store(ctx).read("items", ITEMS).to_pandas().set_index("item_id")
    return sample.loc[items, "caption"].tolist()


def _write_exemplars(folder: Path, sae, positions: torch.Tensor, pooled: PooledCodes, items: list[str],
                     grid: tuple[int, int] | None, keep: int) -> int:
    """Top images per feature by mean code per position, and the feature's map on each; return the map count."""
    best, scores = top_images(pooled.image_means.float(), keep)  # (G, keep)
    live = scores > 0
    feature = torch.arange(best.shape[0])[:, None].expand_as(best)[live]
    image = best[live]
    ranks = torch.arange(best.shape[1])[None, :].expand_as(best)[live]
    names = np.asarray(items, dtype=object)
    _write(folder, "exemplars", pa.table({"feature": feature.int().numpy(), "rank": ranks.int().numpy(),
                                          "item_id": names[image.numpy()], "score": scores[live].double().numpy()}))
    maps = {"feature": [], "item_id": [], "grid_rows": [], "grid_cols": [], "scale": [], "heatmap": []}
    if grid is not None and image.numel():
        first_row = torch.cumsum(pooled.image_positions, 0) - pooled.image_positions
        values = feature_maps(sae, positions, first_row, grid[0] * grid[1], image, feature)
        scale, blobs = quantise_maps(values.reshape(-1, *grid))
        maps = {"feature": feature.int().numpy(), "item_id": names[image.numpy()],
                "grid_rows": np.full(len(blobs), grid[0]), "grid_cols": np.full(len(blobs), grid[1]),
                "scale": scale.numpy(), "heatmap": blobs}
    _write(folder, "heatmaps", pa.table(maps, schema=pa.schema([
        ("feature", pa.int32()), ("item_id", pa.string()), ("grid_rows", pa.int32()), ("grid_cols", pa.int32()),
        ("scale", pa.float32()), ("heatmap", pa.binary())])))
    return len(maps["heatmap"])


def _write_attributions(ctx: StageContext, target: Target, lens: str | None, folder: Path, pooled: PooledCodes,
                        items: list[str], manifest: Manifest, device: str) -> dict:
    """Probes from pooled internal codes to output-lens concept presence; return the manifest counts."""
    from precompute.stages.encode import ENERGIES, encode_store
    from precompute.stages.train import sae_path

    schema_attr = pa.schema([("concept", pa.int32()), ("rank", pa.int32()), ("feature", pa.int32()),
                             ("score", pa.float64())])
    schema_probe = pa.schema([("concept", pa.int32()), ("positives", pa.int32()), ("auroc", pa.float64())])
    store = encode_store(ctx, lens, target.generator.name) if lens else None
    if store is None or not (store.folder / "manifest.json").is_file():
        manifest.notes.append("no output-lens energies for this generator: attribution skipped (run the encode stage)")
        _write(folder, "attributions", schema_attr.empty_table())
        _write(folder, "probes", schema_probe.empty_table())
        return {"probes": 0, "probes_skipped": 0}
    n_concepts = json.loads((sae_path(ctx) / "config.json").read_text())["n_concepts"]
    energies = store.read("energies", ENERGIES)
    sample = sample_store(ctx).read("items", ITEMS).to_pandas().set_index("item_id")
    row = pd.Index(sample.loc[items, "position"].to_numpy()).get_indexer(energies.column("position").to_numpy())
    found = (row >= 0) & (energies.column("energy").to_numpy() > 0)
    presence = sp.csc_array((np.ones(int(found.sum()), dtype=np.float32),
                             (row[found], energies.column("concept").to_numpy()[found])),
                            shape=(len(items), n_concepts))
    probe = target.table.probe
    settings = ProbeSettings(min_positives=probe.min_positives, holdout=probe.holdout, l2=probe.l2,
                             steps=probe.steps, top=probe.top, seed=target.table.seed)
    with ctx.progress(None, f"attribution probes {target.generator.name}", "concept") as advance:
        result = attribute(pooled.image_means, presence, settings, advance, device)
    concept = np.arange(n_concepts)[:, None].repeat(result.top_features.shape[1], axis=1)
    rank = np.arange(result.top_features.shape[1])[None, :].repeat(n_concepts, axis=0)
    useful = result.fitted[:, None] & (result.top_features >= 0) & (result.top_scores > 0)
    _write(folder, "attributions", pa.table({"concept": concept[useful], "rank": rank[useful],
                                             "feature": result.top_features[useful],
                                             "score": result.top_scores[useful]}, schema=schema_attr))
    _write(folder, "probes", pa.table({
        "concept": np.arange(n_concepts, dtype=np.int32), "positives": result.positives.astype(np.int32),
        "auroc": pa.array(result.auroc, mask=np.isnan(result.auroc))}, schema=schema_probe))
    fitted = result.fitted & ~np.isnan(result.auroc)
    return {"probes": int(result.fitted.sum()), "probes_skipped": int((~result.fitted).sum()),
            "probe_auroc_mean": round(float(result.auroc[fitted].mean()), 4) if fitted.any() else None,
            "attributions": int(useful.sum())}


def publish_internal(ctx: StageContext, atlas) -> bool:
    """Load every finished, current internal-lens output into the atlas being built; say whether any was."""
    if not ctx.config.internal:
        return False
    lens = _lens(ctx)
    described, db = {}, atlas.db
    for target in _targets(ctx):
        folder = result_dir(ctx, target, lens)
        if not (folder / "info.json").is_file():
            continue
        info = json.loads((folder / "info.json").read_text())
        name = target.generator.name
        relative = f"{INTERNAL_SAE}/{name}"
        atlas.add_model(Path(info["sae"]), relative)
        described[name] = {"point": info["point"], "step": info["step"], "sae": relative,
                           "channels": info["channels"], "grid": info["grid"],
                           "scored_features": info["scored_features"]}
        for output, table in OUTPUTS.items():
            db.execute(f"INSERT INTO {table} BY NAME SELECT ? AS source_id, * FROM read_parquet(?)",
                       [name, str(folder / f"{output}.parquet")])
        atlas.add_manifest(json.loads((folder / "manifest.json").read_text()))
    if described:
        atlas.set_info("internal", json.dumps(described, sort_keys=True))
    return bool(described)
