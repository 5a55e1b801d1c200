"""Learning-rate schedules that know the length of training.

A schedule is configured in YAML like a strategy (``class_path``/``init_args``) and turned
into a ``torch.optim.lr_scheduler.LambdaLR`` once the trainer knows how many optimizer steps
the run will take, so "÷10 at 50% and 75% of training" needs no step counts in the config.
All schedules step once per optimizer step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from skipln.errors import ConfigError


class Schedule(ABC):
    """A multiplier of the optimizer's base learning rate, as a function of the step."""

    @abstractmethod
    def factor(self, total_steps: int) -> Callable[[int], float]:
        """The multiplier at each step, for a run of ``total_steps`` optimizer steps."""

    def build(self, optimizer: Optimizer, total_steps: int) -> LambdaLR:
        return LambdaLR(optimizer, self.factor(max(int(total_steps), 1)))


def _warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    return start_factor + (1.0 - start_factor) * step / warmup_steps


class MultiStep(Schedule):
    """Step decay at fractions of training, with an optional warm-up.

    He et al. 2016's CIFAR recipe: ``lr × gamma`` at 50% and 75% of training
    (32k and 48k of 64k iterations). For ResNet-110 they train at ``0.1 × lr`` for the first
    400 iterations: ``warmup_steps: 400, warmup_mode: constant, warmup_start_factor: 0.1``.

    Args:
        milestones: fractions of the total number of steps, each in (0, 1), increasing.
        gamma: the multiplier applied at each milestone.
        warmup_steps: steps of warm-up before the full learning rate.
        warmup_start_factor: the multiplier at step 0 of the warm-up.
        warmup_mode: ``linear`` rises from ``warmup_start_factor`` to 1; ``constant`` holds
            ``warmup_start_factor`` for the whole warm-up.
    """

    def __init__(
        self,
        milestones: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.1,
        warmup_mode: Literal["linear", "constant"] = "linear",
    ) -> None:
        milestones = [float(m) for m in milestones]
        if any(not 0.0 < m < 1.0 for m in milestones) or milestones != sorted(milestones):
            raise ConfigError(f"MultiStep: 'milestones' must be increasing fractions in (0, 1), got {milestones}")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"MultiStep: 'gamma' must be in (0, 1], got {gamma}")
        if warmup_steps < 0:
            raise ConfigError(f"MultiStep: 'warmup_steps' must be >= 0, got {warmup_steps}")
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_steps = warmup_steps
        self.warmup_start_factor = warmup_start_factor
        if warmup_mode not in ("linear", "constant"):
            raise ConfigError(f"MultiStep: 'warmup_mode' must be 'linear' or 'constant', got {warmup_mode!r}")
        self.warmup_mode = warmup_mode

    def factor(self, total_steps: int) -> Callable[[int], float]:
        boundaries = [round(m * total_steps) for m in self.milestones]

        def f(step: int) -> float:
            decay = self.gamma ** sum(step >= b for b in boundaries)
            if step < self.warmup_steps:
                if self.warmup_mode == "constant":
                    return decay * self.warmup_start_factor
                return decay * _warmup(step, self.warmup_steps, self.warmup_start_factor)
            return decay

        return f


class InverseSqrt(Schedule):
    """Linear warm-up, then decay with the inverse square root of the step (Vaswani et al. 2017).

    fairseq's ``inverse_sqrt``: the learning rate rises linearly from
    ``warmup_init_factor × lr`` to ``lr`` over ``warmup_steps``, then falls as
    ``lr · sqrt(warmup_steps / step)``.
    """

    def __init__(self, warmup_steps: int = 4000, warmup_init_factor: float = 0.0) -> None:
        if warmup_steps < 1:
            raise ConfigError(f"InverseSqrt: 'warmup_steps' must be >= 1, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.warmup_init_factor = warmup_init_factor

    def factor(self, total_steps: int) -> Callable[[int], float]:
        def f(step: int) -> float:
            # LambdaLR evaluates step 0 before the first update; fairseq's first update uses step 1.
            step = step + 1
            if step < self.warmup_steps:
                return _warmup(step, self.warmup_steps, self.warmup_init_factor)
            return math.sqrt(self.warmup_steps / step)

        return f


class WarmupCosine(Schedule):
    """Linear warm-up, then cosine decay to ``min_factor × lr`` at the end of training."""

    def __init__(self, warmup_steps: int = 0, min_factor: float = 0.0, warmup_start_factor: float = 0.0) -> None:
        if warmup_steps < 0:
            raise ConfigError(f"WarmupCosine: 'warmup_steps' must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor
        self.warmup_start_factor = warmup_start_factor

    def factor(self, total_steps: int) -> Callable[[int], float]:
        decay_steps = max(total_steps - self.warmup_steps, 1)

        def f(step: int) -> float:
            if step < self.warmup_steps:
                return _warmup(step, self.warmup_steps, self.warmup_start_factor)
            progress = min((step - self.warmup_steps) / decay_steps, 1.0)
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        return f


__all__ = ["InverseSqrt", "MultiStep", "Schedule", "WarmupCosine"]
