"""Learning-rate schedules laid over a run's steps: `constant`, `onecycle`, `cosine`, `step`.

A schedule is a shape: `factor(step, total)` multiplies `optim.lr` at batch `step` of `total`.
`build(optimizer, total)` makes a `torch.optim.lr_scheduler.LambdaLR` stepped once per batch
whose `total_steps` may change while it runs, so a wall-clock budget can lay the schedule over
the steps it expects to reach (`tradeoff.loop.fit`). `constant` builds no scheduler at all: the
seed's recipe runs exactly as before schedules existed.

Lengths are fractions of the run (warm-up, milestones), never epochs, so one config fits any
number of epochs or any budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "OneCycle",
    "Schedule",
    "ScheduledLR",
    "Step",
    "create",
]


def _fraction(name: str, value: float, *, open_low: bool = False, open_high: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok and high_ok):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name} must be in {lo}0, 1{hi} (got {value!r})")


class Schedule:
    """The factor on `optim.lr` at each step; subclasses validate their options on creation."""

    name = "schedule"

    def factor(self, step: int, total: int) -> float:
        raise NotImplementedError

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> ScheduledLR | None:
        """A per-batch scheduler over `total_steps` steps (None: the learning rate never moves)."""
        return ScheduledLR(optimizer, self, total_steps)


class ScheduledLR(LambdaLR):
    """`LambdaLR` following `schedule` over `total_steps`, which may be reset while running."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, schedule: Schedule, total_steps: int
    ) -> None:
        self.schedule = schedule
        self.total_steps = max(1, int(total_steps))
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return self.schedule.factor(step, self.total_steps)


@dataclass(frozen=True)
class Constant(Schedule):
    """`optim.lr` throughout (the seed notebook's recipe)."""

    name = "constant"

    def factor(self, step: int, total: int) -> float:
        return 1.0

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        return None


@dataclass(frozen=True)
class OneCycle(Schedule):
    """`torch.optim.lr_scheduler.OneCycleLR` (two phases, cosine annealing) with `optim.lr`
    as its `max_lr`: up from lr/div_factor to lr over the first `pct_start` of the run, then
    down to lr/div_factor/final_div_factor. Momentum is not cycled."""

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    name = "onecycle"

    def __post_init__(self) -> None:
        _fraction("pct_start", self.pct_start, open_low=True, open_high=True)
        for key in ("div_factor", "final_div_factor"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
                raise ValueError(f"{key} must be a number >= 1 (got {value!r})")

    def factor(self, step: int, total: int) -> float:
        # OneCycleLR's own phase boundaries (its get_lr), so both give the same rates.
        start = 1.0 / self.div_factor
        end = start / self.final_div_factor
        step = min(step, total - 1)
        warm_end = float(self.pct_start * total) - 1
        if step <= warm_end:
            return _cos(start, 1.0, step / warm_end if warm_end > 0 else 1.0)
        span = (total - 1) - warm_end
        return _cos(1.0, end, (step - warm_end) / span if span > 0 else 1.0)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Linear warm-up over the first `warmup` of the run, then cosine decay to
    `min_factor` × lr at the end."""

    warmup: float = 0.05
    min_factor: float = 0.0
    name = "cosine"

    def __post_init__(self) -> None:
        _fraction("warmup", self.warmup, open_high=True)
        _fraction("min_factor", self.min_factor)

    def factor(self, step: int, total: int) -> float:
        warm = round(self.warmup * total)
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return _cos(1.0, self.min_factor, progress)


@dataclass(frozen=True)
class Step(Schedule):
    """lr × `gamma`^k after the k-th of `milestones` (fractions of the run, increasing)."""

    milestones: Sequence[float] = (0.5, 0.75)
    gamma: float = 0.1
    name = "step"

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        for m in self.milestones:
            _fraction("milestones", m, open_low=True, open_high=True)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones must increase (got {list(self.milestones)})")
        if not (isinstance(self.gamma, (int, float)) and 0 < self.gamma <= 1):
            raise ValueError(f"gamma must be in (0, 1] (got {self.gamma!r})")

    def factor(self, step: int, total: int) -> float:
        passed = sum(step >= round(m * total) for m in self.milestones)
        return self.gamma**passed


def _cos(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from `start` (progress 0) to `end` (progress 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)


SCHEDULES: dict[str, type[Schedule]] = {s.name: s for s in (Constant, OneCycle, Cosine, Step)}


def create(name: str = "constant", **options: object) -> Schedule:
    """The schedule `name` with its options (config group `schedule`)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; schedules: {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**options)
    except TypeError as exc:
        valid = list(SCHEDULES[name].__dataclass_fields__)
        unknown = sorted(set(options) - set(valid))
        if not unknown:
            raise ValueError(str(exc)) from None
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for schedule {name!r}; "
            f"valid options: {', '.join(valid) or 'none'}"
        ) from None
