"""Whether a tensor's data can be read directly (by NumPy or the package's C loops)."""

from __future__ import annotations

import torch

__all__ = ["traced"]


def traced(t: torch.Tensor) -> bool:
    """True when `t` has no readable data: inside torch.func transforms (vmap, grad, jvp wrap
    it) or while torch.compile traces. Code that hands data to NumPy or C must take a path of
    plain torch ops then (without out= arguments, which the transforms' rules refuse)."""
    return torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(t)
