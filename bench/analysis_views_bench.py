"""Benchmark: the explorer's analysis views at the paper's scale.

Builds a synthetic atlas in code (32,000 concepts, 10,000 pairs, four generators, the
analysis tables at their real shapes: 100-bin delta histograms, a 100 x 100 eigenvector
alignment per generator, 30 energies per image, 8 exemplars per concept and image set
with heatmaps for the best and its counterparts, the card's ranked partners, neighbours,
energy histograms and activation examples per quantile band), serves it in process and requests
every analysis view repeatedly: rankings (page, "load more" rows, JSON, CSV, Parquet),
model comparison (a 32,000-point scatter), datapoints, a pair page, co-occurrence and
frequency vs delta. Reports per URL the median and 95th-percentile time and the
response size (raw and gzip-compressed).

    python bench/analysis_views_bench.py [--concepts 32000] [--items 10000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from precompute.analysis.examples import add_activation_examples
from precompute.atlas.writer import AtlasBuilder

GENERATORS = ("sd15", "sd15-dpo", "sd21", "pixart")
EXEMPLARS = 8  # top images kept per concept and side (the encode stage's default)


def _insert(builder: AtlasBuilder, table: str, columns: dict[str, object]) -> None:
    builder.db.register("incoming", pa.table(columns))
    builder.db.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
    builder.db.unregister("incoming")


def build_synthetic_atlas(out: Path, concepts: int, items: int, seed: int = 0) -> Path:
    """An atlas with every analysis table filled with plausible random values (no image files)."""
    rng = np.random.default_rng(seed)
    sources = ("real", *GENERATORS)
    with AtlasBuilder(out) as atlas:
        atlas.set_info("run_name", "synthetic-32k")
        atlas.set_info("stages", json.dumps(["sample", "generate", "train", "encode", "analyze", "build"]))
        _insert(atlas, "sources", {"source_id": list(sources), "kind": ["real"] + ["diffusers"] * len(GENERATORS),
                                   "label": list(sources), "config": ["{}"] * len(sources),
                                   "n_images": [items] * len(sources)})
        item_ids = [f"laion-{i:06d}" for i in range(items)]
        _insert(atlas, "items", {"item_id": item_ids, "position": np.arange(items, dtype=np.int32),
                                 "caption": [f"a photo of thing {i % 977} on a table" for i in range(items)]})
        _insert(atlas, "images", {
            "image_id": [f"{s}/{i}" for s in sources for i in item_ids], "item_id": item_ids * len(sources),
            "source_id": [s for s in sources for _ in item_ids],
            "path": [f"images/{s}/{p:07d}.png" for s in sources for p in range(items)],
            "width": np.full(items * len(sources), 512, dtype=np.int32),
            "height": np.full(items * len(sources), 512, dtype=np.int32), "flag": [None] * (items * len(sources))})
        ids = np.arange(concepts, dtype=np.int32)
        _insert(atlas, "concepts", {
            "concept": ids, "label": [f"concept {i}" for i in ids], "label_source": ["caption"] * concepts,
            "label_auroc": rng.uniform(0.45, 0.95, concepts), "caption_words": [f"concept {i}" for i in ids],
            "caption_auroc": rng.uniform(0.45, 0.95, concepts),
            "vlm_label": [None] * concepts, "world_concept": [None] * concepts,
            "world_auroc": np.full(concepts, np.nan), "umap_x": rng.normal(size=concepts).astype(np.float32),
            "umap_y": rng.normal(size=concepts).astype(np.float32), "is_dead": rng.random(concepts) < 0.02,
            "energy_max": rng.lognormal(2, 0.5, concepts)})
        _insert(atlas, "concept_neighbours", _ranked(rng, concepts, "neighbour", "cosine"))
        nu_real = np.clip(rng.lognormal(-4, 1.2, concepts), 0, 1)
        for g in GENERATORS:
            e_real = rng.lognormal(0, 1, concepts)
            e_gen = e_real * rng.lognormal(-0.1, 0.8, concepts)
            delta = 1 / (1 + np.exp(-(e_gen - e_real) / 0.8))
            width = rng.uniform(0.01, 0.3, concepts)
            _insert(atlas, "concept_stats", {
                "source_id": [g] * concepts, "concept": ids, "e_real": e_real, "e_gen": e_gen, "delta": delta,
                "relative_delta": (e_gen - e_real) / (e_gen + e_real), "nu_real": nu_real,
                "nu_gen": np.clip(nu_real * rng.lognormal(0, 0.5, concepts), 0, 1),
                "suppressed": delta < 0.1, "exaggerated": delta > 0.9,
                "suppressed_paper": delta < 0.1, "exaggerated_paper": delta > 0.9,
                "ci_low": np.clip(delta - width, 0, 1), "ci_high": np.clip(delta + width, 0, 1),
                "significant": (delta + width < 0.5) | (delta - width > 0.5),
                "delta_sharp": 1 / (1 + np.exp(-(e_gen - e_real) / 0.4))})
            counts, edges = np.histogram(delta, bins=100, range=(0, 1))
            _insert(atlas, "delta_histograms", {"source_id": [g] * 100, "bin": np.arange(100, dtype=np.int32),
                                                "low": edges[:-1], "high": edges[1:], "count": counts})
            _insert(atlas, "source_summary", {
                "source_id": [g], "skewness": [float(((delta - delta.mean()) ** 3).mean() / delta.std() ** 3)],
                "n_suppressed": [int((delta < 0.1).sum())], "n_exaggerated": [int((delta > 0.9).sum())],
                "n_significant": [int(rng.integers(concepts))]})
            _insert(atlas, "datapoints", {"source_id": [g] * items, "item_id": item_ids,
                                          "l2": rng.lognormal(3, 0.5, items), "mean_sigmoid": rng.random(items)})
            cosine = np.abs(rng.normal(0, 0.1, (100, 100))) + np.eye(100) * 0.7
            i, j = np.indices(cosine.shape)
            _insert(atlas, "eigenvector_alignment", {"source_id": [g] * cosine.size, "real_rank": i.ravel(),
                                                     "gen_rank": j.ravel(), "cosine": np.clip(cosine, 0, 1).ravel()})
        _insert(atlas, "model_correlations", {
            "source_a": [a for a in GENERATORS for _ in GENERATORS], "source_b": list(GENERATORS) * len(GENERATORS),
            "pearson": rng.uniform(0.4, 1.0, len(GENERATORS) ** 2)})
        for s in sources:
            epsilon = np.logspace(-6, 0, 30)
            _insert(atlas, "cooccurrence_l0", {"source_id": [s] * 30, "epsilon": epsilon,
                                               "l0": (3e7 * epsilon ** -0.3 / 63).astype(np.int64)})
            _insert(atlas, "cooccurrence_spectrum", {"source_id": [s] * 100, "rank": np.arange(100, dtype=np.int32),
                                                     "eigenvalue": 50.0 / np.arange(1, 101) ** 1.3})
            _insert(atlas, "exemplars", {"source_id": [s] * (concepts * EXEMPLARS), "concept": np.repeat(ids, EXEMPLARS),
                                         "rank": np.tile(np.arange(EXEMPLARS, dtype=np.int32), concepts),
                                         "item_id": [item_ids[k] for k in rng.integers(items, size=concepts * EXEMPLARS)],
                                         "score": np.sort(rng.random((concepts, EXEMPLARS)), axis=1)[:, ::-1].ravel()})
            _insert(atlas, "concept_partners", {"source_id": [s] * (concepts * 10),
                                                **_ranked(rng, concepts, "partner", "weight")})
            _insert(atlas, "energy_histograms", {"source_id": [s] * concepts, "concept": ids,
                                                 "counts": list(rng.poisson(20, (concepts, 24)).astype(np.int32))})
            per_image = 30
            _insert(atlas, "energies", {
                "image_id": np.repeat([f"{s}/{i}" for i in item_ids], per_image), "source_id": [s] * (items * per_image),
                "concept": rng.integers(concepts, size=items * per_image).astype(np.int32),
                "energy": rng.exponential(5.0, items * per_image).astype(np.float32)})
        # heatmaps (8 x 8 grids) of every set's best exemplar, in that set and in the others (the card's 2x2)
        best = atlas.db.execute("SELECT concept, item_id FROM exemplars WHERE rank = 0").fetchall()
        rows = [(s, c, item) for c, item in best for s in sources]
        _insert(atlas, "heatmaps", {"source_id": [r[0] for r in rows], "concept": np.array([r[1] for r in rows], np.int32),
                                    "item_id": [r[2] for r in rows], "grid_rows": np.full(len(rows), 8, np.int32),
                                    "grid_cols": np.full(len(rows), 8, np.int32), "scale": np.ones(len(rows), np.float32),
                                    "heatmap": [bytes(64)] * len(rows), "energy": rng.exponential(5.0, len(rows))})
        add_activation_examples(atlas.db)
        atlas.commit()
    return out


def synthetic_atlas_in(folder: str, concepts: int, items: int) -> Path:
    """``build_synthetic_atlas`` into ``folder``/atlas, saying what it built and how long it took."""
    start = time.perf_counter()
    atlas = build_synthetic_atlas(Path(folder) / "atlas", concepts, items)
    print(f"synthetic atlas: {concepts} concepts, {items} pairs, {len(GENERATORS)} generators, "
          f"built in {time.perf_counter() - start:.1f} s\n")
    return atlas


def atlas_parser(description: str) -> argparse.ArgumentParser:
    """A bench's arguments for what it measures: ``--atlas`` (one you built) or a synthetic one of ``--concepts``
    and ``--items``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=None, help="an atlas to measure (default: a synthetic one)")
    parser.add_argument("--concepts", type=int, default=32_000)
    parser.add_argument("--items", type=int, default=10_000)
    return parser


def on_atlas(args: argparse.Namespace, measure: Callable[[Path], None]) -> None:
    """``measure`` the atlas ``args`` give, or a synthetic one built for it (then removed)."""
    if args.atlas is not None:
        measure(args.atlas)
        return
    with tempfile.TemporaryDirectory() as folder:
        measure(synthetic_atlas_in(folder, args.concepts, args.items))


def _ranked(rng: np.random.Generator, concepts: int, name: str, score: str, top: int = 10) -> dict[str, object]:
    """``top`` random partners per concept, in descending score: rows (concept, rank, <name>, <score>)."""
    return {"concept": np.repeat(np.arange(concepts, dtype=np.int32), top),
            "rank": np.tile(np.arange(top, dtype=np.int32), concepts),
            name: rng.integers(concepts, size=concepts * top).astype(np.int32),
            score: np.sort(rng.random((concepts, top)), axis=1)[:, ::-1].ravel().astype(np.float32)}


def measure(client: TestClient, url: str, repeats: int) -> dict[str, object]:
    times, body, status = [], b"", 0
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        body, status = response.content, response.status_code
    times.sort()
    return {"url": url, "status": status, "median_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
            "kb": len(body) / 1024, "gzip_kb": len(gzip.compress(body)) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", type=int, default=32_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        atlas = synthetic_atlas_in(folder, args.concepts, args.items)
        urls = ["/rankings", "/rankings?direction=exaggerated&significant=true&min_freq=0.01",
                "/rankings/rows?offset=50&limit=50", "/api/rankings?limit=200", "/api/rankings.csv",
                "/api/rankings.parquet", "/compare", "/compare?a=sd15&b=sd15-dpo", "/api/compare",
                "/datapoints?end=divergence", f"/pairs/laion-{args.items // 2:06d}?model=sd21", "/cooccurrence", "/frequency",
                "/frequency?scale=log"]
        app = create_app(Settings(atlas=atlas, labels=Path(folder) / "labels.json"))
        with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback host: the app refuses others
            print("| url | status | median ms | p95 ms | KB | KB gzip |\n| --- | --- | --- | --- | --- | --- |")
            for url in urls:
                client.get(url)  # warm-up
                m = measure(client, url, args.repeats)
                print(f"| `{m['url']}` | {m['status']} | {m['median_ms']:.0f} | {m['p95_ms']:.0f} | "
                      f"{m['kb']:.0f} | {m['gzip_kb']:.0f} |")


if __name__ == "__main__":
    main()
