"""Interleaved timing: every variant measured once per round, rounds repeated, medians kept.

Timing the variants round-robin (rather than all repetitions of one, then the next) spreads
slow drifts of the machine — other processes, thermal throttling, frequency scaling — over all
of them equally, so their ratios stay meaningful on a busy machine. The starting variant
rotates from round to round, so none is always measured right after the same neighbour.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Case", "Stats", "interleaved", "synchronize", "timed"]


@dataclass(frozen=True)
class Case:
    """One thing to time: `fn` is timed, `setup` (if any) runs untimed before each call."""

    name: str
    fn: Callable[[], object]
    setup: Callable[[], object] | None = None


@dataclass(frozen=True)
class Stats:
    """Median, min and max of n samples, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = [1000.0 * s for s in seconds]
        return cls(statistics.median(ms), min(ms), max(ms), len(ms))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers the kernels it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, GPU work included, with the garbage collector paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def interleaved(
    cases: Sequence[Case], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each case: `warmup` untimed rounds, then `repeats` timed rounds.

    Each round calls every case once, starting one case further along than the last round.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats})")
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    for r in range(warmup + repeats):
        shift = r % len(cases) if cases else 0
        for case in [*cases[shift:], *cases[:shift]]:
            if case.setup is not None:
                case.setup()
            seconds = timed(case.fn, device)
            if r >= warmup:
                samples[case.name].append(seconds)
    return samples
