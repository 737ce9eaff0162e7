"""A wall-clock training budget: when it is spent, and how many steps it buys.

The comparison of 1-Lipschitz layers by Prach et al. (CVPR 2024) gives every method the same
time: the first epoch's speed estimates how many steps fit, and the learning-rate schedule is
laid over those. `Budget.steps_for` is that estimate; `tradeoff.loop.fit` applies it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["Budget"]


@dataclass
class Budget:
    """`seconds` of wall clock from `started` (`time.perf_counter`; by default: when the
    budget is made)."""

    seconds: float
    started: float | None = None

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds)):
            raise ValueError(f"the budget must be finite seconds (got {self.seconds!r})")
        if self.seconds <= 0:
            raise ValueError(f"the budget must be > 0 seconds (got {self.seconds!r})")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> bool:
        """Whether the time is up (checked between batches)."""
        return self.elapsed >= self.seconds

    def steps_for(self, steps_done: int, seconds: float) -> int:
        """All the steps the budget buys at the pace of `steps_done` steps in `seconds`."""
        if steps_done < 1 or seconds <= 0:
            return max(1, steps_done)
        return max(steps_done, math.floor(self.seconds * steps_done / seconds))
