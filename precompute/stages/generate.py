"""Stage 2, generate: one image per caption for each generator of the config.

Generated shards mirror the sample stage's shards, so a generator's shard k holds the
counterparts of the real items in sample shard k, and a killed run resumes by shard.
This stage runs the planted world generator; the diffusers and trained world-model
generators plug into ``GENERATOR_KINDS`` as they land.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from PIL import Image

from precompute.config import GeneratorConfig, PlantedGeneratorConfig, WorldSourceConfig
from precompute.images import save_png
from precompute.manifest import Manifest
from precompute.stages.common import StageContext, digest_of
from precompute.stages.sample import ANNOTATIONS, ITEMS, SKIPPED, sample_store
from precompute.stages.shards import ShardStore

IMAGES = pa.schema([
    ("item_id", pa.string()), ("path", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("flag", pa.string()),
])

# A generated image with the world concepts it shows (empty when unknown) and a flag.
Generated = tuple[Image.Image, tuple[str, ...], str | None]
# Generator factory: config, run context -> callable(captions, item_ids) -> generated images.
GeneratorFn = Callable[[list[str], list[str]], list[Generated]]


def _planted(generator: PlantedGeneratorConfig, ctx: StageContext) -> GeneratorFn:
    from precompute.world import PlantedEffect, PlantedGenerator

    source = ctx.config.source
    size = generator.size or (source.size if isinstance(source, WorldSourceConfig) else 64)
    effects = [PlantedEffect(e.effect, e.concept, e.rate, e.replace_with) for e in generator.effects]
    model = PlantedGenerator(effects=effects, seed=generator.seed, size=size)

    def generate(captions: list[str], item_ids: list[str]) -> list[Generated]:
        out = []
        for caption, item_id in zip(captions, item_ids):
            sample = model.generate(caption, item_id)
            out.append((Image.fromarray(sample.image), tuple(sample.scene.concepts()), None))
        return out

    return generate


GENERATOR_KINDS: dict[str, Callable[[Any, StageContext], GeneratorFn]] = {"planted": _planted}
NOT_YET = {
    "world-model": "the trained world generator arrives with issue #4",
    "diffusers": "diffusers generators arrive with issue #4",
}


def generator_store(ctx: StageContext, generator: GeneratorConfig) -> ShardStore:
    digest = digest_of(ctx.sample_digest(), generator.model_dump(mode="json"))
    return ShardStore(ctx.work / "generate" / generator.name, digest)


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def run_generator(ctx: StageContext, generator: GeneratorConfig) -> dict:
    """Generate the counterpart of every sampled item with one generator."""
    sample = sample_store(ctx)
    store = generator_store(ctx, generator)
    make = GENERATOR_KINDS[generator.kind](generator, ctx)
    manifest = Manifest("generate", generator.name, generator.model_dump(mode="json"))
    total = sum(m["n_items"] for m in sample.metas())
    image_dir = store.folder / "images"
    image_dir.mkdir(exist_ok=True)
    batch_size = getattr(generator, "batch_size", 64)
    with ctx.progress(total, f"generate {generator.name}", "img") as advance:
        for shard in sample.indices():
            meta = store.finished(shard)
            if meta is not None:
                advance(meta["n_items"])
                continue
            items = sample.read_shard(shard, "items", ITEMS).to_pylist()
            images, annotations, skips = [], [], []
            for batch in _batches(items, batch_size):
                results = make([r["caption"] for r in batch], [r["item_id"] for r in batch])
                for row, (image, concepts, flag) in zip(batch, results):
                    relative = f"images/{row['position']:07d}.png"
                    save_png(image, store.folder / relative)
                    images.append({"item_id": row["item_id"], "path": relative, "width": image.width,
                                   "height": image.height, "flag": flag})
                    annotations.extend({"item_id": row["item_id"], "concept": c} for c in concepts)
                advance(len(batch))
            store.write(shard, {
                "images": pa.Table.from_pylist(images, schema=IMAGES),
                "annotations": pa.Table.from_pylist(annotations, schema=ANNOTATIONS),
                "skipped": pa.Table.from_pylist(skips, schema=SKIPPED),
            }, {"n_items": len(images)})
    for skip in store.read("skipped", SKIPPED).to_pylist():
        manifest.skip(skip["item_id"], skip["reason"], skip["detail"])
    flags = store.read("images", IMAGES).column("flag").to_pylist()
    manifest.counts.update(images=len(flags), flagged=sum(f is not None for f in flags))
    return manifest.finish(store.folder / "manifest.json")


def run_generate(ctx: StageContext) -> tuple[list[dict], list[str]]:
    """Run every generator whose kind exists; return manifests and notes on the others."""
    manifests, notes = [], []
    for generator in ctx.config.generators:
        if generator.kind in GENERATOR_KINDS:
            manifests.append(run_generator(ctx, generator))
        else:
            notes.append(f"generator {generator.name!r} ({generator.kind}) skipped: {NOT_YET[generator.kind]}")
    return manifests, notes
