"""Whether a tensor's data can be read directly (by NumPy or the package's C loops), and
autograd Functions applied without torch.func's per-call bookkeeping when no transform runs."""

from __future__ import annotations

import torch

__all__ = ["apply_function", "traced"]


def traced(t: torch.Tensor) -> bool:
    """True when `t` has no readable data: inside torch.func transforms (vmap, grad, jvp wrap
    it) or while torch.compile traces. Code that hands data to NumPy or C must take a path of
    plain torch ops then (without out= arguments, which the transforms' rules refuse)."""
    return torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(t)


def apply_function(function: type[torch.autograd.Function], *args: object) -> object:
    """`function.apply(*args)` for positional `args`, without what `Function.apply` does in
    Python at every call to serve torch.func (signature binding, unwrapping dead wrappers):
    tens of µs per layer on a training step's cold caches. While torch.func transforms are
    active or torch.compile traces, `Function.apply` itself."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*args)
