"""The optional C extension of the spectral layers, loaded only when its build matches this
source.

`_spectral.c` is compiled by `pip install`; an editable install keeps the old binary when the
source changes until it is reinstalled. A binary of another interface version would be handed
the wrong arguments, so it is refused with a warning that names the fix, and the layers run on
torch ops and NumPy meanwhile (same results).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType

__all__ = ["SPECTRAL_INTERFACE", "spectral"]

SPECTRAL_INTERFACE = 2  # INTERFACE in _spectral.c


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
