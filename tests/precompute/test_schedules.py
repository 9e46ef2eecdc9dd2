"""The warm-up + cosine schedule, and why it is not diffusers' ``get_cosine_schedule_with_warmup``."""

import pytest
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup

from precompute.schedules import warmup_cosine


def diffusers_rates(peak: float, warmup: int, total: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    schedule = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_the_curve_rises_to_the_peak_then_decays_to_the_floor():
    rates = [warmup_cosine(s, 1000, 5e-4, 50, 1e-6) for s in range(1200)]
    assert rates[49] == pytest.approx(5e-4) and all(a < b for a, b in zip(rates[:49], rates[1:50]))
    assert all(a >= b for a, b in zip(rates[50:1000], rates[51:1001]))
    assert rates[999] == pytest.approx(1e-6, abs=1e-8) and rates[1100] == 1e-6


def test_after_the_warm_up_it_is_diffusers_cosine_but_the_warm_up_is_one_step_ahead():
    ours = [warmup_cosine(s, 1000, 1e-3, 50) for s in range(1000)]
    theirs = diffusers_rates(1e-3, 50, 1000)
    assert max(abs(a - b) for a, b in zip(ours[50:], theirs[50:])) < 1e-15
    assert theirs[0] == 0.0 and ours[0] == pytest.approx(1e-3 / 50)  # diffusers' first step trains at lr 0
    floored = [warmup_cosine(s, 1000, 1e-3, 50, 1e-6) for s in range(1000)]
    assert abs(floored[-1] - theirs[-1]) > 9e-7  # and it has no floor
