"""Stage 1, sample: a data source's items become the run's real images and captions.

Each real image is stored as the atlas shows it (longer side at most
``run.max_image_side``); one that had to be downscaled for that is also kept whole
(``originals/``), because the energy model must see the original pixels with its own
resize as the only one, as the paper's code does (its DINOv2 transform resizes the
original image).

Items are taken in the source's order until ``run.n_items`` usable ones are collected
or the source runs out. Bad items (undecodable, empty caption, duplicate id, ...) are
skipped, counted by reason and listed, and the run goes on.
"""

from __future__ import annotations

from itertools import islice

import pyarrow as pa

from precompute.images import fit_within, save_png
from precompute.manifest import Manifest
from precompute.sources import Skip, build_source
from precompute.stages.common import StageContext
from precompute.stages.shards import ShardStore

ITEMS = pa.schema([
    ("position", pa.int64()), ("item_id", pa.string()), ("caption", pa.string()),
    ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original", pa.string()),  # the full-size pixels when ``path`` is a downscaled copy, else null
])
ANNOTATIONS = pa.schema([("item_id", pa.string()), ("concept", pa.string())])
SKIPPED = pa.schema([("item_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def sample_store(ctx: StageContext) -> ShardStore:
    return ShardStore(ctx.work / "sample", ctx.sample_digest())


def run_sample(ctx: StageContext) -> dict:
    """Collect ``run.n_items`` items into shards under ``WORK/sample``; return the manifest."""
    config = ctx.config
    store = sample_store(ctx)
    manifest = Manifest("sample", "real", {"run": config.run.model_dump(mode="json"),
                                           "source": config.source.model_dump(mode="json")})
    wanted = config.run.n_items
    # Resume after the last finished shard.
    metas = store.metas()
    done = sum(m["n_items"] for m in metas)
    candidate = metas[-1]["next_candidate"] if metas else 0
    seen_ids = set(store.read("items", ITEMS).column("item_id").to_pylist()) if metas else set()
    source = build_source(config.source, ctx.work)
    candidates = source.iter_from(candidate) if hasattr(source, "iter_from") else islice(iter(source), candidate, None)
    image_dir = store.folder / "images"
    image_dir.mkdir(exist_ok=True)

    shard = len(metas)
    rows: list[dict] = []
    annotations: list[dict] = []
    skips: list[dict] = []
    exhausted = False
    with ctx.progress(wanted, "sample real images", "img") as advance:
        advance(done)
        while done < wanted and not exhausted:
            try:
                entry = next(candidates)
            except StopIteration:
                exhausted = True
                entry = None
            if entry is not None:
                candidate += 1
                if isinstance(entry, Skip):
                    skips.append({"item_id": entry.item_id, "reason": entry.reason, "detail": entry.detail})
                elif entry.item_id in seen_ids:
                    skips.append({"item_id": entry.item_id, "reason": "duplicate-id",
                                  "detail": "an earlier item has the same id"})
                elif not entry.caption or not entry.caption.strip():
                    skips.append({"item_id": entry.item_id, "reason": "empty-caption", "detail": "caption is empty"})
                else:
                    position = done + len(rows)
                    image = fit_within(entry.image, config.run.max_image_side)
                    relative = f"images/{position:07d}.png"
                    save_png(image, store.folder / relative)
                    original = None
                    if image is not entry.image:  # downscaled for the atlas: the energy model reads the original
                        original = f"originals/{position:07d}.png"
                        save_png(entry.image, store.folder / original)
                    seen_ids.add(entry.item_id)
                    rows.append({"position": position, "item_id": entry.item_id, "caption": entry.caption.strip(),
                                 "path": relative, "width": image.width, "height": image.height,
                                 "original": original})
                    annotations.extend({"item_id": entry.item_id, "concept": c} for c in entry.annotations)
                    advance(1)
            if len(rows) == ctx.shard_size or done + len(rows) == wanted or (exhausted and (rows or skips)):
                store.write(shard, {
                    "items": pa.Table.from_pylist(rows, schema=ITEMS),
                    "annotations": pa.Table.from_pylist(annotations, schema=ANNOTATIONS),
                    "skipped": pa.Table.from_pylist(skips, schema=SKIPPED),
                }, {"n_items": len(rows), "next_candidate": candidate})
                done += len(rows)
                shard += 1
                rows, annotations, skips = [], [], []

    for skip in store.read("skipped", SKIPPED).to_pylist():
        manifest.skip(skip["item_id"], skip["reason"], skip["detail"])
    manifest.counts.update(items=done, candidates=candidate, shards=shard)
    if done < wanted:
        manifest.notes.append(f"the source ran out: {done} usable items of the {wanted} asked for")
    if done == 0:
        from precompute.errors import DataError

        raise DataError(f"the source yielded no usable item ({sum(manifest.skipped.values())} skipped: "
                        f"{dict(manifest.skipped)})")
    return manifest.finish(store.folder / "manifest.json")
