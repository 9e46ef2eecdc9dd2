"""Embedded-world throughput: images/s of scene + caption + render, and of writing them to disk.

    .venv/bin/python bench/world_bench.py [--n 6000] [--size 64] [--workers 1,2] [--repeats 3]
                                          [--out bench/out]

For each worker count w, measures

* ``render``: ``World.sample`` (scene, caption, pixels, masks) over ``n`` items in w
  processes (ordered ``imap`` over 64-item chunks, results discarded in the worker);
  the pool is started and warmed before the clock starts;
* ``export``: ``write_samples`` end to end (pool start, PNG encoding, JSONL files)
  into a temporary folder under ``--out``.

Each is run ``repeats`` times and the best run is reported (the machine is shared).
With one worker the CPU time per image is reported too: unlike wall time it does not
depend on what else the machine runs, and 2 / (CPU s per image) is the rate two free
cores would give.
Target: >= 500 images/s at 64x64 with 2 workers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

from precompute.world import World, write_samples
from precompute.world.export import CHUNK, _pool_context

_WORLD: World | None = None


def _init(size: int) -> None:
    global _WORLD
    _WORLD = World(seed=0, size=size)


def _render_chunk(bounds: tuple[int, int]) -> int:
    start, n = bounds
    checksum = 0
    for index in range(start, start + n):
        checksum += int(_WORLD.sample(index).image[0, 0, 0])
    return checksum


def _render_rate(n: int, size: int, workers: int) -> tuple[float, float | None]:
    """(images/s of wall time, CPU ms per image in this process when workers == 1)."""
    chunks = [(s, min(CHUNK, n - s)) for s in range(0, n, CHUNK)]
    if workers == 1:
        _init(size)
        _render_chunk((n, 16))  # warm the grid caches
        start, cpu = time.perf_counter(), time.process_time()
        for chunk in chunks:
            _render_chunk(chunk)
        return n / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / n
    with _pool_context().Pool(workers, initializer=_init, initargs=(size,)) as pool:
        list(pool.imap(_render_chunk, [(n + i * 16, 16) for i in range(workers * 2)]))  # warm-up
        start = time.perf_counter()
        for _ in pool.imap(_render_chunk, chunks):
            pass
        return n / (time.perf_counter() - start), None


def _export_rate(n: int, size: int, workers: int, out: str) -> float:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        start = time.perf_counter()
        write_samples(tmp, n, seed=0, size=size, workers=workers)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="images per measurement")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--out", default="bench/out", help="scratch folder for the export runs (emptied after)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    print(f"date: {datetime.date.today()}  nproc: {os.cpu_count()}  python: {platform.python_version()}  "
          f"cpu: {platform.processor() or platform.machine()}")
    print(f"n={args.n} size={args.size}x{args.size} repeats={args.repeats} (best run)\n")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| workers | render+caption img/s | CPU ms/img (1 process) | export (PNG+JSONL) img/s |")
    print("| ---: | ---: | ---: | ---: |")
    for workers in counts:
        render, cpu_ms = max(_render_rate(args.n, args.size, workers) for _ in range(args.repeats))
        export = max(_export_rate(args.n, args.size, workers, args.out) for _ in range(args.repeats))
        cpu = f"{cpu_ms:.2f}" if cpu_ms is not None else "-"
        print(f"| {workers} | {render:,.0f} | {cpu} | {export:,.0f} |", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
