"""Stage 2, generate: one image per caption for each generator of the config.

Generated shards mirror the sample stage's shards, so a generator's shard k holds the
counterparts of the real items in sample shard k, and a killed run resumes by shard.
Generator kinds: the planted world generator, the trained world model, and any
diffusers text-to-image pipeline (DESIGN.md section 4). Every generator is checked
(``PREFLIGHTS``) before any image is made, so an unknown model fails at once. Under
``accelerate launch`` process i generates the sample shards with index % N == i
(``precompute.generators.distributed``). Activations captured in the same pass are
written beside each shard as safetensors (``positions``, ``pooled``, ``image_index``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from PIL import Image

from precompute.config import (
    DiffusersGeneratorConfig, GeneratorConfig, PlantedGeneratorConfig, WorldModelGeneratorConfig, WorldSourceConfig,
)
from precompute.errors import ConfigError
from precompute.fileio import atomic_path
from precompute.generators.distributed import ProcessSlot, current_slot
from precompute.images import save_png
from precompute.manifest import Manifest
from precompute.stages.common import StageContext, digest_of, weights_identity
from precompute.stages.sample import ANNOTATIONS, ITEMS, SKIPPED, sample_store
from precompute.stages.shards import ShardStore

IMAGES = pa.schema([
    ("item_id", pa.string()), ("path", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("flag", pa.string()),
])

# A generated image with the world concepts it shows (empty when unknown) and a flag.
Generated = tuple[Image.Image, tuple[str, ...], str | None]
# Generator factory: config, run context -> callable(captions, item_ids) -> generated images (or
# ``Skipped(reason, detail)`` for an item that could not be made).
GeneratorFn = Callable[[list[str], list[str]], list[Generated]]


def _source_size(ctx: StageContext) -> int:
    source = ctx.config.source
    return source.size if isinstance(source, WorldSourceConfig) else 64


def _planted(generator: PlantedGeneratorConfig, ctx: StageContext) -> GeneratorFn:
    from precompute.world import PlantedEffect, PlantedGenerator

    size = generator.size or _source_size(ctx)
    effects = [PlantedEffect(e.effect, e.concept, e.rate, e.replace_with) for e in generator.effects]
    source = ctx.config.source
    noise = source.noise if isinstance(source, WorldSourceConfig) else 0.0  # the captions it has learned to read
    model = PlantedGenerator(effects=effects, seed=generator.seed, size=size, caption_noise=noise)

    def generate(captions: list[str], item_ids: list[str]) -> list[Generated]:
        out = []
        for caption, item_id in zip(captions, item_ids):
            sample = model.generate(caption, item_id)
            out.append((Image.fromarray(sample.image), tuple(sample.scene.concepts()), None))
        return out

    return generate


def _diffusers(generator: DiffusersGeneratorConfig, ctx: StageContext) -> GeneratorFn:
    from precompute.generators.registry import make_diffusers_generator

    return make_diffusers_generator(generator, current_slot().device(generator.device))


def _world_model(generator: WorldModelGeneratorConfig, ctx: StageContext) -> GeneratorFn:
    from precompute.generators.registry import make_world_model_generator

    return make_world_model_generator(generator, current_slot().device(generator.device), _source_size(ctx))


def _preflight_diffusers(generator: DiffusersGeneratorConfig) -> None:
    from precompute.generators.registry import preflight_diffusers

    preflight_diffusers(generator)


def _preflight_world_model(generator: WorldModelGeneratorConfig) -> None:
    from precompute.generators.registry import preflight_world_model

    preflight_world_model(generator)


GENERATOR_KINDS: dict[str, Callable[[Any, StageContext], GeneratorFn]] = {
    "planted": _planted, "diffusers": _diffusers, "world-model": _world_model,
}
# Checks run for every generator before any image is made (unknown model, missing weights).
PREFLIGHTS: dict[str, Callable[[Any], None]] = {"diffusers": _preflight_diffusers, "world-model": _preflight_world_model}
NOT_YET: dict[str, str] = {}  # kinds named in configs but not built yet: none left


def _weights(generator: GeneratorConfig) -> list[str]:
    """The identity of a generator's weights: retrained weights at the same path are a new generator."""
    if isinstance(generator, WorldModelGeneratorConfig):
        from precompute.generators.registry import WORLD_WEIGHTS

        return [weights_identity(generator.path or WORLD_WEIGHTS)]
    if isinstance(generator, DiffusersGeneratorConfig):
        return [weights_identity(ref) for ref in (generator.model, generator.unet, generator.prior) if ref]
    return []


def image_key(generator: GeneratorConfig) -> dict:
    """What a generator's images depend on: its config without ``control`` (a role in the analysis, not a
    setting of the model), so marking a generator as a control reuses its images."""
    return generator.model_dump(mode="json", exclude={"control"})


def generator_store(ctx: StageContext, generator: GeneratorConfig) -> ShardStore:
    digest = digest_of(ctx.sample_digest(), image_key(generator), _weights(generator))
    return ShardStore(ctx.work / "generate" / generator.name, digest)


def capture_file(store: ShardStore, shard: int, point: str, step: int) -> str:
    """Relative path of one shard's captured activations for (hook point, step)."""
    return f"shards/{shard:05d}.capture.{point}.step{step}.safetensors"


def _write_capture(store: ShardStore, shard: int, drained: dict) -> dict[str, dict]:
    """Write a shard's captured tensors (before its marker); return their files and shapes for the meta."""
    from safetensors.torch import save_file

    written = {}
    for (point, step), tensors in sorted(drained.items()):
        relative = capture_file(store, shard, point, step)
        shapes = {name: list(tensor.shape) for name, tensor in tensors.items()}
        # one metadata key: safetensors writes metadata in hash order, so several keys would make the bytes vary
        header = json.dumps({"point": point, "step": step, "shapes": shapes}, sort_keys=True)
        with atomic_path(store.folder / relative) as temp:  # a temp name of this writer's own
            save_file(tensors, str(temp), metadata={"capture": header})
        written[f"{point}@{step}"] = {"file": relative, "shapes": shapes}
    return written


def read_capture(store: ShardStore, point: str, step: int) -> dict[str, Any]:
    """A generator's captured activations over all finished shards, rows tied to item ids.

    Returns ``positions`` (n, C) fp16, ``pooled`` (images, C), ``image_items`` (the item id
    of each pooled row) and ``position_items`` (the item id of each position row): the
    input of the internal lens (RAIGen SAE training, DiffLens probes).
    """
    import torch
    from safetensors.torch import load_file

    positions, pooled, image_items, position_items = [], [], [], []
    for shard in store.indices():
        entry = (store.finished(shard) or {}).get("capture", {}).get(f"{point}@{step}")
        if entry is None:
            raise ConfigError(f"{store.folder.name}: no capture of {point!r} at step {step} in shard {shard}")
        tensors = load_file(store.folder / entry["file"])
        ids = store.read_shard(shard, "images", IMAGES).column("item_id").to_pylist()
        if not ids:  # a shard past a generator's n_items draws nothing (its tensors have no channel axis)
            continue
        positions.append(tensors["positions"])
        pooled.append(tensors["pooled"])
        image_items.extend(ids)
        position_items.extend(ids[i] for i in tensors["image_index"].tolist())
    if not positions:
        raise ConfigError(f"{store.folder.name}: no finished shard to read captures from")
    return {"positions": torch.cat(positions), "pooled": torch.cat(pooled), "image_items": image_items,
            "position_items": position_items}


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def run_generator(ctx: StageContext, generator: GeneratorConfig, slot: ProcessSlot | None = None) -> dict:
    """Generate the counterpart of every sampled item (of this process's shards) with one generator."""
    from precompute.generators.diffusers_generator import Skipped

    slot = slot or ProcessSlot()
    sample = sample_store(ctx)
    with slot.main_first():  # the main process clears a stale folder before the others look at it
        store = generator_store(ctx, generator)
        (store.folder / "images").mkdir(exist_ok=True)
    manifest = Manifest("generate", generator.name, generator.model_dump(mode="json"))
    mine = [shard for shard in sample.indices() if slot.owns(shard)]
    total = sum(sample.finished(shard)["n_items"] for shard in mine)
    if generator.n_items is not None:  # the first n_items positions only (shards hold consecutive positions)
        total = min(total, generator.n_items)
    batch_size = getattr(generator, "batch_size", 64)
    make: GeneratorFn | None = None  # loaded at the first unfinished shard: a finished run loads nothing
    with ctx.progress(total, f"generate {generator.name}", "img") as advance:
        for shard in mine:
            meta = store.finished(shard)
            if meta is not None:
                advance(meta["n_items"] + meta.get("skipped", 0))
                continue
            make = make or GENERATOR_KINDS[generator.kind](generator, ctx)
            started = time.perf_counter()
            items = [r for r in sample.read_shard(shard, "items", ITEMS).to_pylist()
                     if generator.n_items is None or r["position"] < generator.n_items]
            images, annotations, skips = [], [], []
            for batch in _batches(items, batch_size):
                results = make([r["caption"] for r in batch], [r["item_id"] for r in batch])
                for row, result in zip(batch, results):
                    if isinstance(result, Skipped):
                        skips.append({"item_id": row["item_id"], "reason": result.reason, "detail": result.detail})
                        continue
                    image, concepts, flag = result
                    relative = f"images/{row['position']:07d}.png"
                    save_png(image, store.folder / relative)
                    images.append({"item_id": row["item_id"], "path": relative, "width": image.width,
                                   "height": image.height, "flag": flag})
                    annotations.extend({"item_id": row["item_id"], "concept": c} for c in concepts)
                advance(len(batch))
            seconds = time.perf_counter() - started
            shard_meta = {"n_items": len(images), "skipped": len(skips), "seconds": round(seconds, 3),
                          "images_per_s": round(len(images) / seconds, 3) if seconds > 0 else None,
                          "process": slot.index, "setup": getattr(make, "setup", {})}
            if hasattr(make, "drain_capture"):
                shard_meta["capture"] = _write_capture(store, shard, make.drain_capture())
            store.write(shard, {
                "images": pa.Table.from_pylist(images, schema=IMAGES),
                "annotations": pa.Table.from_pylist(annotations, schema=ANNOTATIONS),
                "skipped": pa.Table.from_pylist(skips, schema=SKIPPED),
            }, shard_meta)
    slot.wait_for_everyone()  # the manifest covers every process's shards
    for skip in store.read("skipped", SKIPPED).to_pylist():
        manifest.skip(skip["item_id"], skip["reason"], skip["detail"])
    flags = store.read("images", IMAGES).column("flag").to_pylist()
    metas = store.metas()
    manifest.counts.update(images=len(flags), flagged=sum(f is not None for f in flags),
                           black=sum(f == "black" for f in flags), shards=len(metas))
    setups = [m["setup"] for m in metas if m.get("setup")]
    if setups:
        manifest.config = {**manifest.config, "loaded": setups[0]}  # dtype actually used, safety checker, ...
        manifest.notes.extend(setups[0].get("notes", []))
    if not slot.is_main:
        return manifest.to_dict()
    return manifest.finish(store.folder / "manifest.json")


def preflight(ctx: StageContext) -> None:
    """Check every generator (models exist, weights are there) before any image is made; ConfigError if not."""
    for generator in ctx.config.generators:
        check = PREFLIGHTS.get(generator.kind)
        if check is not None:
            check(generator)


def run_generate(ctx: StageContext, slot: ProcessSlot | None = None) -> tuple[list[dict], list[str]]:
    """Run every generator whose kind exists; return manifests and notes on the others."""
    slot = slot or current_slot()
    preflight(ctx)
    manifests, notes = [], []
    for generator in ctx.config.generators:
        if generator.kind in GENERATOR_KINDS:
            manifests.append(run_generator(ctx, generator, slot))
        else:
            notes.append(f"generator {generator.name!r} ({generator.kind}) skipped: {NOT_YET[generator.kind]}")
    return manifests, notes
