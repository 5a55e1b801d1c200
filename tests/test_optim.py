"""Learning-rate schedules follow their recipes step by step."""

from __future__ import annotations

import math

import pytest
import torch

from skipln.optim import InverseSqrt, MultiStep, WarmupCosine


def lrs(schedule, total: int, base: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = schedule.build(optimizer, total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_multistep_divides_by_ten_at_half_and_three_quarters() -> None:
    values = lrs(MultiStep(), 64)
    assert values[31] == pytest.approx(1.0) and values[32] == pytest.approx(0.1)
    assert values[47] == pytest.approx(0.1) and values[48] == pytest.approx(0.01)


def test_multistep_constant_warmup_holds_the_low_rate() -> None:
    values = lrs(MultiStep(warmup_steps=4, warmup_mode="constant", warmup_start_factor=0.1), 20)
    assert values[:4] == pytest.approx([0.1] * 4)
    assert values[4] == pytest.approx(1.0)


def test_multistep_linear_warmup_rises_to_the_base_rate() -> None:
    values = lrs(MultiStep(warmup_steps=4, warmup_start_factor=0.0), 20)
    assert values[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_inverse_sqrt_peaks_at_warmup_then_decays_as_inverse_sqrt() -> None:
    values = lrs(InverseSqrt(warmup_steps=10), 40)
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 9
    assert values[39] == pytest.approx(math.sqrt(10 / 40))


def test_warmup_cosine_ends_at_min_factor() -> None:
    values = lrs(WarmupCosine(warmup_steps=5, min_factor=0.1), 105)
    assert values[5] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(
    "make",
    [lambda: MultiStep(milestones=[0.75, 0.5]), lambda: MultiStep(milestones=[1.5]), lambda: MultiStep(warmup_mode="cubic"), lambda: InverseSqrt(0)],
)
def test_invalid_schedule_arguments_are_rejected(make) -> None:
    with pytest.raises(ValueError):
        make()
