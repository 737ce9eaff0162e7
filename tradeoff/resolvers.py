"""OmegaConf resolvers used by the configs in tradeoff/conf/ (registered on import)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

__all__ = ["first_set", "pid"]


def first_set(*values: object) -> object:
    """The first value that is neither null nor empty: `${first_set:${sweep.name},adhoc}`."""
    return next((v for v in values if v not in (None, "")), None)


def pid() -> int:
    """This process's id: `${pid:}` keeps concurrent sweeps' folders apart. Cached like Hydra's
    `${now:...}`, so a launcher's workers resolve the launching process's id."""
    return os.getpid()


if not OmegaConf.has_resolver("first_set"):
    OmegaConf.register_new_resolver("first_set", first_set)
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", pid, use_cache=True)
