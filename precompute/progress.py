"""Progress bars with rate and ETA for every long step.

Library code takes an optional ``advance(n)`` callable; the CLI passes one that drives
a rich progress bar. Keeping the bar out of the library keeps it quiet in tests and
usable from notebooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

Advance = Callable[[int], None]
MIN_RATE_SECONDS = 0.5  # a step that finishes faster shows no rate

console = Console(stderr=True, soft_wrap=True)  # never break a path or message mid-line


class RateColumn(ProgressColumn):
    """Items per second, with the unit the step counts (images, tokens, steps)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if task.finished and (task.elapsed or 0.0) < MIN_RATE_SECONDS:
            speed = None  # work found finished (a reused stage) or too short to time: no rate, not millions per second
        return Text(f"{speed:,.1f} {unit}/s" if speed else f"-- {unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "it") -> Iterator[Advance]:
    """A progress bar showing count, rate and ETA; yields ``advance(n)``."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, unit=unit)
        yield lambda n=1: progress.advance(task, n)


def quiet(_: int = 1) -> None:
    """The ``advance`` of code run without a bar."""


def quiet_library_bars() -> None:
    """Model loading in diffusers and transformers draws its own bars; our own bars report the work."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
