"""Benchmark: what verifying an atlas costs when the server opens it.

``Atlas(path)`` checks the file holds its blocks in use, every table exists and reads
its first rows, and every table's row count matches the build's (``backend/atlas.py``).
This compares it with a bare open (connect + read ``atlas_info``, what the server did
before) and with what a whole-file check would cost: a SHA-256 of the file, and reading
every table whole. Runs on a given atlas, or on the synthetic paper-scale atlas of
``analysis_views_bench`` (32,000 concepts, 10,000 pairs, four generators) built in a
temp folder.

    python bench/atlas_open_bench.py [--atlas ATLAS] [--concepts 32000] [--items 10000] [--repeats 9]
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))

from backend.atlas import Atlas  # noqa: E402
from precompute.atlas.schema import TABLES  # noqa: E402
from precompute.atlas.writer import ATLAS_DB  # noqa: E402


def measure(root: Path, repeats: int) -> None:
    path = root / ATLAS_DB

    def bare_open() -> None:
        with duckdb.connect(str(path), read_only=True) as db:
            db.execute("SELECT key, value FROM atlas_info").fetchall()

    def verified_open() -> None:
        Atlas(root).close()

    def sha256() -> None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)

    def read_every_table() -> None:
        with duckdb.connect(str(path), read_only=True) as db:
            for table in TABLES:
                db.sql(f"SELECT * FROM {table}").to_arrow_table()

    steps: list[tuple[str, Callable[[], None]]] = [
        ("bare open (connect, read atlas_info)", bare_open), ("verified open (Atlas)", verified_open),
        ("SHA-256 of the file", sha256), ("read every table whole", read_every_table)]
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB\n")
    print(f"| step | median s | min s | max s |  (of {repeats})\n| --- | --- | --- | --- |")
    for name, step in steps:
        step()  # warm-up: the file in the page cache, as at a restart
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")


def main() -> None:
    from analysis_views_bench import atlas_parser, on_atlas

    parser = atlas_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    on_atlas(args, lambda atlas: measure(atlas, args.repeats))


if __name__ == "__main__":
    main()
