"""`Function`: torch.autograd.Function without the per-call argument binding.

When a Function defines `setup_context`, torch's `apply` binds every call's arguments to
`forward`'s signature with `inspect.signature` to fill in defaults: ~17 µs per call, paid by
every GroupSort2, pooling and weight parametrization of every training step. The Functions of
this package are always called with all of `forward`'s arguments, positionally, so outside
torch.func transforms `apply` can go straight to autograd's C entry point; any other call
(keywords, omitted defaults, vmap/grad/jvp) takes torch's own path.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch._functorch.utils import unwrap_dead_wrappers

__all__ = ["Function"]


class Function(torch.autograd.Function):
    """Base for the package's autograd Functions: same semantics, cheaper `apply`."""

    _arity: int = -1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls._arity = len(inspect.signature(cls.forward).parameters)

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != cls._arity or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))
