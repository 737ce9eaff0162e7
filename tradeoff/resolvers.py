"""OmegaConf resolvers used by the configs in tradeoff/conf/ (registered on import)."""

from __future__ import annotations

from omegaconf import OmegaConf

__all__ = ["first_set"]


def first_set(*values: object) -> object:
    """The first value that is neither null nor empty: `${first_set:${sweep.name},adhoc}`."""
    return next((v for v in values if v not in (None, "")), None)


if not OmegaConf.has_resolver("first_set"):
    OmegaConf.register_new_resolver("first_set", first_set)
