"""Progress bars: the rate column says items per second, and nothing for work that was found finished."""

from __future__ import annotations

from rich.progress import Progress

from precompute.progress import RateColumn


def _rate(seconds: float, items: int) -> str:
    now = [0.0]
    progress = Progress(RateColumn(), get_time=lambda: now[0], disable=True)
    task_id = progress.add_task("encode real", total=items, unit="img")
    for _ in range(4):
        now[0] += seconds / 4
        progress.advance(task_id, items // 4)
    return RateColumn().render(progress.tasks[0]).plain


def test_a_timed_step_shows_its_rate():
    assert _rate(10.0, 2000) == "200.0 img/s"


def test_a_step_found_finished_shows_no_rate():
    """A second run reuses finished shards: 2,000 images 'done' in a millisecond is not a speed."""
    assert _rate(0.001, 2000) == "-- img/s"
