"""OmegaConf resolvers used by the configs in tradeoff/conf/ (registered on import)."""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
from omegaconf import OmegaConf

__all__ = ["first_set", "log_uniform", "pid"]


def first_set(*values: object) -> object:
    """The first value that is neither null nor empty: `${first_set:${sweep.name},adhoc}`."""
    return next((v for v in values if v not in (None, "")), None)


def pid() -> int:
    """This process's id: `${pid:}` keeps concurrent sweeps' folders apart. Cached like Hydra's
    `${now:...}`, so a launcher's workers resolve the launching process's id."""
    return os.getpid()


def log_uniform(low: float, high: float, draw: int, salt: str) -> float:
    """A value drawn log-uniformly from [low, high], fixed by (draw, salt):
    `${log_uniform:1e-4,1e-2,${search.draw},lr}`. Every job with the same draw gets the same
    value whatever else it changes, so a random search is paired across the grid's other axes;
    another salt draws independently (lr and weight decay)."""
    low, high = _positive("low", low), _positive("high", high)
    if not high > low:
        raise ValueError(f"log_uniform: high={high} must be > low={low}; swap them")
    if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
        raise ValueError(f"log_uniform: draw={draw!r} must be an integer >= 0, e.g. search.draw=0")
    # A stable key (Python's hash() of a str changes between processes).
    key = int.from_bytes(hashlib.sha256(f"{draw}/{salt}".encode()).digest()[:8], "little")
    u = np.random.default_rng(key).random()
    return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


def _positive(name: str, value: object) -> float:
    """`value` as a finite float > 0, or a one-line error naming the argument."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"log_uniform: {name}={value!r} must be a finite number > 0, e.g. 1e-4")
    return number


if not OmegaConf.has_resolver("first_set"):
    OmegaConf.register_new_resolver("first_set", first_set)
if not OmegaConf.has_resolver("log_uniform"):
    OmegaConf.register_new_resolver("log_uniform", log_uniform)
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", pid, use_cache=True)
