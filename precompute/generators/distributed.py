"""Share the generate stage over processes: ``accelerate launch`` (or ``torch.distributed.run``).

DESIGN.md section 9: the same stages run on one CPU, one GPU, or many GPUs/nodes;
shards are files, so a lost worker costs only its shard. Process ``i`` of ``N``
handles the sample shards whose index is ``i`` modulo ``N``; a finished shard is
never redone, so a killed run resumes where each process stopped. The process
group (NCCL on GPUs, gloo on the CPU) comes from ``accelerate.PartialState``; it is
only used for barriers, never to move images.

The launcher that runs the sample and generate stages in each process is
``precompute.stages.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSlot:
    """This process's place in the run: global index, number of processes, index on its machine."""

    index: int = 0
    count: int = 1
    local_index: int = 0

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def owns(self, shard: int) -> bool:
        """True when this process generates sample shard ``shard``."""
        return shard % self.count == self.index

    def wait_for_everyone(self) -> None:
        """A barrier across processes (nothing to wait for in a single process)."""
        if self.count > 1:
            _state().wait_for_everyone()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Let the main process do a block (e.g. clear a stale folder) before the others do it."""
        if not self.is_main:
            self.wait_for_everyone()
        yield
        if self.is_main:
            self.wait_for_everyone()

    def device(self, requested: str) -> str:
        """'auto' is this process's GPU when there is one (one GPU per process), else the CPU."""
        if requested != "auto":
            return requested
        import torch

        if torch.cuda.is_available():
            return f"cuda:{self.local_index % torch.cuda.device_count()}"
        return "cpu"


def _state():
    """accelerate's process state; sets up the process group once (gloo on the CPU, NCCL on GPUs)."""
    import torch
    from accelerate import PartialState

    # Without cpu=True a CPU-only process under plain torch.distributed.run is taken for a single process.
    return PartialState(cpu=not torch.cuda.is_available())


def current_slot() -> ProcessSlot:
    """The slot of this process, from the launcher's environment (a single process when not launched)."""
    count = int(os.environ.get("WORLD_SIZE", "1"))
    if count <= 1:
        return ProcessSlot()
    state = _state()
    return ProcessSlot(state.process_index, state.num_processes, state.local_process_index)
