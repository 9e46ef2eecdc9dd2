"""The last stage, build: write ``ATLAS/atlas.duckdb`` and the image files, atomically.

Reads the finished outputs of the earlier stages from the work folder and publishes
them as one atlas through ``AtlasBuilder`` (temp folder, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path


from precompute.atlas.writer import AtlasBuilder
from precompute.errors import AtlasError
from precompute.config import PlantedGeneratorConfig, WorldSourceConfig
from precompute.manifest import Manifest
from precompute.stages.common import StageContext
from precompute.stages.generate import GENERATOR_KINDS, IMAGES, generator_store
from precompute.stages.sample import ANNOTATIONS, ITEMS, SKIPPED, sample_store

OUTPUT_SAE = "models/output-sae"  # the output-lens SAE inside the atlas (config.json + model.safetensors)


def _stage_manifest(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_build(ctx: StageContext, out: Path) -> dict:
    """Publish the work folder's finished stage outputs as the atlas at ``out``."""
    config = ctx.config
    manifest = Manifest("build", str(out), {"out": str(out)})
    sample = sample_store(ctx)
    items = sample.read("items", ITEMS)
    if items.num_rows == 0:
        raise AtlasError(f"nothing to build: the sample stage has not run in {ctx.work}")
    generators = [g for g in config.generators if g.kind in GENERATOR_KINDS]
    for generator in generators:
        if generator_store(ctx, generator).indices() != sample.indices():
            raise AtlasError(f"generator {generator.name!r} has not finished: run the generate stage first")
    with AtlasBuilder(out) as atlas:
        db = atlas.db
        atlas.set_info("config_digest", config.digest())
        atlas.set_info("config", json.dumps(config.model_dump(mode="json"), sort_keys=True))
        atlas.set_info("run_name", config.run.name)
        db.register("sample_items", items)
        db.execute("INSERT INTO items SELECT item_id, position, caption FROM sample_items")
        db.execute("""INSERT INTO images SELECT 'real/' || item_id, item_id, 'real', 'images/real/' ||
                      regexp_replace(path, '^images/', ''), width, height, NULL FROM sample_items""")
        db.execute("INSERT INTO sources VALUES ('real', 'real', ?, ?, ?)",
                   [f"real ({config.source.kind})", json.dumps(config.source.model_dump(mode="json")), items.num_rows])
        atlas.link_tree(sample.folder / "images", "images/real")
        annotations = {"real": sample.read("annotations", ANNOTATIONS)}
        skipped = {"real": ("sample", sample.read("skipped", SKIPPED))}
        document = _stage_manifest(sample.folder)
        if document:
            atlas.add_manifest(document)

        for generator in generators:
            store = generator_store(ctx, generator)
            images = store.read("images", IMAGES)
            db.register("gen_images", images)
            db.execute("""INSERT INTO images SELECT ? || '/' || item_id, item_id, ?, 'images/' || ? || '/' ||
                          regexp_replace(path, '^images/', ''), width, height, flag FROM gen_images""",
                       [generator.name, generator.name, generator.name])
            db.unregister("gen_images")
            db.execute("INSERT INTO sources VALUES (?, ?, ?, ?, ?)",
                       [generator.name, generator.kind, generator.name,
                        json.dumps(generator.model_dump(mode="json")), images.num_rows])
            atlas.link_tree(store.folder / "images", f"images/{generator.name}")
            annotations[generator.name] = store.read("annotations", ANNOTATIONS)
            skipped[generator.name] = ("generate", store.read("skipped", SKIPPED))
            if isinstance(generator, PlantedGeneratorConfig):
                for effect in generator.effects:
                    db.execute("INSERT INTO planted_effects VALUES (?, ?, ?, ?, ?)",
                               [generator.name, effect.concept, effect.effect, effect.rate, effect.replace_with])
            document = _stage_manifest(store.folder)
            if document:
                atlas.add_manifest(document)

        if isinstance(config.source, WorldSourceConfig):
            from precompute.world import CONCEPTS, marginal_frequencies

            frequencies = marginal_frequencies()
            db.executemany("INSERT INTO world_concepts VALUES (?, ?, ?)",
                           [[c.name, c.family, frequencies[c.name]] for c in CONCEPTS])
        for source_id, table in annotations.items():
            db.register("notes", table)
            db.execute("INSERT INTO world_annotations SELECT ? || '/' || item_id, item_id, ?, concept FROM notes",
                       [source_id, source_id])
            db.unregister("notes")
        for source_id, (stage, table) in skipped.items():
            db.register("skips", table)
            db.execute("INSERT INTO skipped SELECT ?, ?, item_id, reason, detail FROM skips", [stage, source_id])
            db.unregister("skips")
        stages = ["sample", "generate"]
        if _add_output_lens(ctx, atlas):
            stages += ["train", "encode", "analyze"]
        from precompute.stages.internal import publish_internal

        if publish_internal(ctx, atlas):
            stages.append("internal")
        manifest.counts.update(items=items.num_rows, generators=len(generators))
        atlas.add_manifest(manifest.to_dict())
        atlas.set_info("stages", json.dumps(stages + ["build"]))
        atlas.commit()
    return manifest.to_dict()


def _add_output_lens(ctx: StageContext, atlas: AtlasBuilder) -> bool:
    """Load the encode and analyze outputs when they are current for this config; say whether they were."""
    from precompute.analysis.examples import add_activation_examples
    from precompute.errors import ConfigError
    from precompute.stages.analyze import analysis_is_current, analyze_dir
    from precompute.stages.encode import encode_store, exemplar_table, lens_digest, maps_path

    try:
        lens = lens_digest(ctx)
    except ConfigError:
        return False  # no SAE yet: the output-lens stages have not run
    if not analysis_is_current(ctx, lens):
        return False
    db, folder = atlas.db, analyze_dir(ctx, lens)
    info = json.loads((folder / "info.json").read_text())

    def parquet(name: str) -> str:
        return str(folder / f"{name}.parquet")

    db.execute("""INSERT INTO concepts BY NAME SELECT * REPLACE (
                      CASE WHEN isnan(world_auroc) THEN NULL ELSE world_auroc END AS world_auroc,
                      CASE WHEN isnan(caption_auroc) THEN NULL ELSE caption_auroc END AS caption_auroc,
                      CASE WHEN isnan(label_auroc) THEN NULL ELSE label_auroc END AS label_auroc)
                  FROM read_parquet(?)""", [parquet("concepts")])
    db.execute("INSERT INTO concept_stats BY NAME SELECT * FROM read_parquet(?)", [parquet("concept_stats")])
    atlas.set_info("temperature", repr(float(info["temperature"])))
    for table in ("delta_histograms", "source_summary", "null_controls", "model_correlations", "cooccurrence_l0",
                  "cooccurrence_spectrum", "eigenvector_alignment", "concept_neighbours", "concept_partners",
                  "energy_histograms"):
        db.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [parquet(table)])
    db.execute("""INSERT INTO datapoints SELECT d.source_id, i.item_id, d.l2, d.mean_sigmoid
                  FROM read_parquet(?) d JOIN items i ON i.position = d.position""", [parquet("datapoints")])
    for source_id in [r[0] for r in db.execute("SELECT source_id FROM sources").fetchall()]:
        shards = str(encode_store(ctx, lens, source_id).folder / "shards" / "*.energies.parquet")
        db.execute("""INSERT INTO energies SELECT ? || '/' || i.item_id, ?, e.concept, e.energy
                      FROM read_parquet(?) e JOIN items i ON i.position = e.position""",
                   [source_id, source_id, shards])
        db.register("best", exemplar_table(ctx, lens, source_id, ctx.config.encode.exemplars))
        db.execute("""INSERT INTO exemplars SELECT ?, b.concept, b.rank, i.item_id, b.score
                      FROM best b JOIN items i ON i.position = b.position""", [source_id])
        db.unregister("best")
        encoded = _stage_manifest(encode_store(ctx, lens, source_id).folder)
        if encoded:
            atlas.add_manifest(encoded)
    add_activation_examples(db)  # the card's images below the top exemplars, from the energies just loaded
    from precompute.stages.train import sae_path

    atlas.add_model(sae_path(ctx), OUTPUT_SAE)  # the steering service measures concepts with it
    trained = _stage_manifest(ctx.work / "train")
    if trained and ctx.config.encode.sae is None:
        atlas.add_manifest(trained)
    rows, cols = info["grid"]
    db.execute("""INSERT INTO heatmaps SELECT m.source_id, m.concept, i.item_id, ?, ?, m.scale, m.heatmap,
                         coalesce(e.energy, 0)
                  FROM read_parquet(?) m JOIN items i ON i.position = m.position
                  LEFT JOIN energies e ON e.image_id = m.source_id || '/' || i.item_id AND e.concept = m.concept""",
               [rows, cols, str(maps_path(ctx, lens))])
    if isinstance(ctx.config.source, WorldSourceConfig):
        db.execute("INSERT INTO world_detection BY NAME SELECT * FROM read_parquet(?)", [parquet("world_detection")])
    document = json.loads((folder / "manifest.json").read_text())
    atlas.add_manifest(document)
    return True
