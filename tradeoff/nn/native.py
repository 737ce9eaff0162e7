"""The optional C extensions, and how far the layers may use them and NumPy.

`_spectral.c` and `_pairsort.c` are compiled by `pip install`; an editable install keeps the
old binary when the source changes until it is reinstalled. A `_spectral` binary of another
interface version would be handed the wrong arguments, so it is refused with a warning that
names the fix, and the layers run on torch ops and NumPy meanwhile (same results).

Every accelerated operation has a plain-torch reference; `limited_to("torch")` (or
"numpy") makes the layers take it (or NumPy's loops instead of C's) inside a block, so that
`tradeoff-bench` and the tests run each path in one process. The layers' dispatch functions
ask `allows` at each call.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Iterator
from types import ModuleType

__all__ = [
    "ACCELERATORS",
    "SPECTRAL_INTERFACE",
    "allows",
    "available",
    "limited_to",
    "pairsort",
    "spectral",
]

SPECTRAL_INTERFACE = 3  # INTERFACE in _spectral.c

ACCELERATORS = ("torch", "numpy", "c")
"""What the layers may use, in order: "torch" (the plain-torch references only), "numpy" (also
the eigenvalue forms of the spectral layers with their scalar loops in NumPy), "c" (also the
C kernels where they are built). Each level allows the ones before it."""

_ceiling = "c"


def allows(accelerator: str) -> bool:
    """Whether the layers may use `accelerator` ("numpy" or "c") now."""
    return ACCELERATORS.index(accelerator) <= ACCELERATORS.index(_ceiling)


@contextlib.contextmanager
def limited_to(accelerator: str) -> Iterator[None]:
    """Within the block, the layers use nothing beyond `accelerator` (see `ACCELERATORS`);
    the limit holds for the whole process, every thread."""
    global _ceiling
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS} (got {accelerator!r})")
    saved, _ceiling = _ceiling, accelerator
    try:
        yield
    finally:
        _ceiling = saved


def available(accelerator: str) -> bool:
    """Whether `accelerator` exists here: torch and NumPy always, C when both kernels are built."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS} (got {accelerator!r})")
    return accelerator != "c" or (spectral() is not None and pairsort() is not None)


@functools.cache
def pairsort() -> ModuleType | None:
    """`tradeoff.nn._pairsort` (fused GroupSort2) when built, else None."""
    try:
        return importlib.import_module("tradeoff.nn._pairsort")
    except ImportError:  # no compiler at install time
        return None


@functools.cache
def spectral() -> ModuleType | None:
    """`tradeoff.nn._spectral` when built from this source, else None."""
    try:
        module = importlib.import_module("tradeoff.nn._spectral")
    except ImportError:  # no compiler at install time
        return None
    found = getattr(module, "INTERFACE", 1)
    if found != SPECTRAL_INTERFACE:
        warnings.warn(
            f"tradeoff.nn._spectral was built from another version of _spectral.c (interface "
            f"{found}, this source has {SPECTRAL_INTERFACE}); the spectral layers use torch ops "
            "and NumPy until it is rebuilt: `pip install -e .` in the repository",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module
