"""How the layers adapt to torch's execution modes: whether a tensor's data can be read
directly (by NumPy or the package's C loops), autograd Functions applied without torch.func's
per-call bookkeeping when no transform runs (`_torch_private.apply_function`), and weights
computed outside autocast."""

from __future__ import annotations

import contextlib

import torch

from ._torch_private import apply_function, is_functorch_wrapped

__all__ = ["apply_function", "autocast_enabled", "full_precision", "traced"]


def traced(t: torch.Tensor) -> bool:
    """True when `t` has no readable data: inside torch.func transforms (vmap, grad, jvp wrap
    it) or while torch.compile traces. Code that hands data to NumPy or C must take a path of
    plain torch ops then (without out= arguments, which the transforms' rules refuse)."""
    return torch.compiler.is_compiling() or is_functorch_wrapped(t)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for `device_type` ("cpu", "cuda", ...)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 knows only its CUDA and CPU flags
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """A context without autocast on `device_type` when it is on, else a no-op: constrained
    weights (Gram matrices, eigendecompositions, norms) are computed in the parameters' dtype,
    and autocast applies to the layer's own convolution or product."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
