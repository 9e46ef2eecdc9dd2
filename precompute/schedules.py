"""The learning-rate schedule of the project's training loops: linear warm-up, then cosine decay to a floor.

diffusers ships ``get_cosine_schedule_with_warmup``, but it is not this curve: its
warm-up starts at 0 (step 0 trains at lr 0: ``step / warmup``, where these loops use
``(step + 1) / warmup``) and it decays to 0, while the SAE recipe decays to a floor
(``precompute.sae.train``: 5e-4 down to 1e-6). Over 1,000 steps with a 50-step warm-up
the two differ by ``peak / warmup`` throughout the warm-up (one step's share) and, for
the SAE, by the 1e-6 floor at the end; after the warm-up, with a floor of 0, they agree
to 1e-18 (``tests/precompute/test_schedules.py`` measures both).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, warmup: int, final: float = 0.0) -> float:
    """The learning rate of 0-based ``step`` of ``total``: ``peak * (step + 1) / warmup`` for the first
    ``warmup`` steps, then half a cosine from ``peak`` down to ``final`` at ``total`` (held there after)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * min(progress, 1.0)))
