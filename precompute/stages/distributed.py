"""Launch the sample and generate stages in every process of ``accelerate launch`` (or ``torch.distributed.run``).

Run as ``accelerate launch --num_processes N -m precompute.stages.distributed CONFIG
WORK`` on GPUs, or ``python -m torch.distributed.run --nproc_per_node N -m
precompute.stages.distributed CONFIG WORK`` on CPUs (``accelerate launch --cpu``
starts one process): the sample stage on the main process, then every process
generates its shards (``precompute.generators.distributed``: which process owns which
shard).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from precompute.config import load_config
from precompute.generators.distributed import current_slot
from precompute.progress import progress_bar
from precompute.stages.common import SHARD_SIZE, StageContext
from precompute.stages.generate import run_generate
from precompute.stages.sample import run_sample


@contextmanager
def _no_bar(total, description, unit) -> Iterator:
    yield lambda n=1: None


def main(argv: list[str] | None = None) -> None:
    """Sample (main process) and generate (every process) for a config into a work folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    slot = current_slot()
    config = load_config(args.config)
    progress = progress_bar if slot.is_main and not args.quiet else _no_bar
    ctx = StageContext(config=config, work=args.work, progress=progress, shard_size=args.shard_size)
    with slot.main_first():
        if slot.is_main:
            ctx.work.mkdir(parents=True, exist_ok=True)
            run_sample(ctx)
    run_generate(ctx, slot=slot)


if __name__ == "__main__":
    main()
