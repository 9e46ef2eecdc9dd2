"""Write a sample of the world to disk in the project's "local folder" source format.

Layout of ``out_dir``::

    images/<item_id>.png
    captions.jsonl      {"file": "images/<item_id>.png", "caption": "..."} per line
    annotations.jsonl   {"file": "images/<item_id>.png", "concepts": [...]} per line

so a sampled world reads back as an ordinary folder source, with the ground truth
beside it. Rendering is spread over worker processes in ordered chunks; the JSONL
files are written to a temporary name and renamed at the end, so a killed run never
leaves a captions file that lists images that do not exist.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from precompute.errors import ConfigError
from precompute.world.concepts import Prior
from precompute.world.world import World

CHUNK = 64


def _write_chunk(job: tuple[dict, str, int, int]) -> list[tuple[str, str, list[str]]]:
    """Render items ``start .. start+n-1`` and write their PNGs; return their JSONL rows."""
    world_args, images_dir, start, n = job
    world = World(**world_args)
    rows = []
    for index in range(start, start + n):
        sample = world.sample(index)
        name = f"{sample.item_id}.png"
        tmp = os.path.join(images_dir, f".{name}.tmp")
        Image.fromarray(sample.image).save(tmp, format="PNG", compress_level=3)
        os.replace(tmp, os.path.join(images_dir, name))
        rows.append((f"images/{name}", sample.caption, list(sample.annotations)))
    return rows


def _pool_context():
    """forkserver (spawn where missing): workers never inherit the parent's threads (torch, rich).

    The server preloads this module, so each worker starts with numpy and PIL already imported.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def write_samples(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 64,
    noise: float = 0.02,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    prior: Prior | None = None,
    start: int = 0,
) -> int:
    """Render world items ``start .. start+n-1`` into ``out_dir``; return how many were written.

    ``workers`` > 1 renders in that many processes (``None``: one per CPU core);
    ``progress(advance)`` is called as chunks finish, to drive a progress bar.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"number of world samples must be a non-negative integer, got {n!r}")
    world = World(seed=seed, size=size, noise=noise, prior=prior)  # validates before any work
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer or None, got {workers!r}")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    world_args = {"seed": world.seed, "size": world.size, "noise": world.noise, "prior": world.prior}
    jobs = [(world_args, str(images), s, min(CHUNK, start + n - s)) for s in range(start, start + n, CHUNK)]

    captions_tmp, annotations_tmp = out / ".captions.jsonl.tmp", out / ".annotations.jsonl.tmp"
    written = 0
    with open(captions_tmp, "w", encoding="utf-8") as cap, open(annotations_tmp, "w", encoding="utf-8") as ann:
        for rows in _run(jobs, workers):
            for file, caption, concepts in rows:
                cap.write(json.dumps({"file": file, "caption": caption}) + "\n")
                ann.write(json.dumps({"file": file, "concepts": concepts}) + "\n")
            written += len(rows)
            if progress is not None:
                progress(len(rows))
    os.replace(captions_tmp, out / "captions.jsonl")
    os.replace(annotations_tmp, out / "annotations.jsonl")
    return written


def _run(jobs: list, workers: int) -> Iterator[list]:
    """Chunks' rows in order, in this process or in a pool."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_write_chunk, jobs)
        return
    with _pool_context().Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_write_chunk, jobs)
