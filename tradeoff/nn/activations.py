"""Gradient-norm-preserving activations, each 1-Lipschitz in L2 (they act along channels)."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import native
from .tracing import apply_function, traced

__all__ = ["Abs", "FullSort", "GroupSort", "GroupSort2", "Householder", "MaxMin"]


_pairsort = native.pairsort()  # C loops built by setup.py (_pairsort.c), or None: torch ops

FUSED_GROUPSORT: bool = _pairsort is not None
"""True when GroupSort2 runs on the fused C loops (one pass forward, one backward) for
contiguous float32/float64 CPU tensors; otherwise, and for any other tensor, on torch ops."""


def groupsort2_implementation() -> str:
    """What GroupSort2 runs on here, in words (the bench prints it)."""
    if _pairsort is None or not native.allows("c"):
        why = "not built; see setup.py" if _pairsort is None else "not allowed here"
        return f"torch ops (the fused C kernel is {why})"
    return f"fused C kernel ({'OpenMP' if _pairsort.OPENMP else 'one thread, no OpenMP'})"


_FUSED_DTYPES = {torch.float32: False, torch.float64: True}  # dtype -> is_double
_PARALLEL_MIN = 1 << 15  # below this many elements one thread beats waking torch's others


def _pairs(t: torch.Tensor) -> torch.Tensor:
    return t.unflatten(1, (t.shape[1] // 2, 2))


def _fusable(t: torch.Tensor) -> bool:
    """Whether the C loops should take `t`, the one place that decides between them and the
    torch ops (the reference): the kernel built and allowed (`native.limited_to`), plain
    contiguous float32/64 CPU data, not empty, and, where the kernel was built without OpenMP
    (one thread), only if torch would use one thread too: on several threads, torch's three
    passes beat one single-threaded pass."""
    return (
        _pairsort is not None
        and native.allows("c")
        and not traced(t)
        and t.device.type == "cpu"
        and t.dtype in _FUSED_DTYPES
        and t.numel() > 0
        and t.is_contiguous()
        and (_pairsort.OPENMP or _threads(t) == 1)
    )


def _threads(t: torch.Tensor) -> int:
    return torch.get_num_threads() if t.numel() >= _PARALLEL_MIN else 1


def _loop_args(t: torch.Tensor) -> tuple[int, int, int, bool]:
    """(outer, inner, threads, is_double) of `t` seen as (N·C/2, 2, H·W·…)."""
    outer = t.shape[0] * (t.shape[1] // 2)
    return outer, math.prod(t.shape[2:]), _threads(t), _FUSED_DTYPES[t.dtype]


def _sorted_pairs(x: torch.Tensor, with_mask: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(min, max) of each channel pair, and the swap mask (1 where a > b) if `with_mask`.

    The mask is uint8 from the C loops and x's dtype from torch ops (a float mask makes `lerp`
    exact and several times faster than `where` on CPU); `_swap_pairs` takes either. The two
    agree bit for bit except on a pair holding a NaN: torch's min/max put NaN in both channels,
    the C loops leave such a pair as it is.
    """
    if _fusable(x):
        out = torch.empty_like(x)
        shape = _pairs(x)[:, :, 0].shape
        mask = torch.empty(shape, dtype=torch.uint8, device=x.device) if with_mask else None
        _pairsort.sort_pairs(
            x.data_ptr(), out.data_ptr(), 0 if mask is None else mask.data_ptr(), *_loop_args(x)
        )
        return out, mask
    a, b = _pairs(x).unbind(2)
    if traced(x):
        out = torch.stack((torch.minimum(a, b), torch.maximum(a, b)), 2).flatten(1, 2)
        return out, (a > b).to(x.dtype) if with_mask else None
    pairs = torch.empty_like(_pairs(x))  # written in place: no stack copy
    torch.minimum(a, b, out=pairs[:, :, 0])
    torch.maximum(a, b, out=pairs[:, :, 1])
    return pairs.flatten(1, 2), torch.gt(a, b, out=torch.empty_like(a)) if with_mask else None


def _swap_pairs(t: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """Exchange the two channels of each pair (dim 1 as (C/2, 2)) where `swap` is 1."""
    # double backward and torch.func transforms need differentiable ops without out=
    differentiable = (torch.is_grad_enabled() and t.requires_grad) or traced(t) or traced(swap)
    if swap.dtype == torch.uint8 and not differentiable:
        if not t.is_contiguous():
            t = t.contiguous()
        if _fusable(t):
            out = torch.empty_like(t)
            _pairsort.swap_pairs(t.data_ptr(), swap.data_ptr(), out.data_ptr(), *_loop_args(t))
            return out
    if swap.dtype != t.dtype:
        swap = swap.to(t.dtype)
    a, b = _pairs(t).unbind(2)
    if differentiable:
        return torch.stack((torch.lerp(a, b, swap), torch.lerp(b, a, swap)), 2).flatten(1, 2)
    out = torch.empty_like(_pairs(t))
    torch.lerp(a, b, swap, out=out[:, :, 0])
    torch.lerp(b, a, swap, out=out[:, :, 1])
    return out.flatten(1, 2)


class _SortPairs(torch.autograd.Function):
    """GroupSort2 as one permutation: its gradient is the same permutation (an involution),
    so backward and forward-mode AD cost one masked swap instead of autograd's min/max."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _sorted_pairs(x, with_mask=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, swap = output
        ctx.mark_non_differentiable(swap)
        ctx.set_materialize_grads(False)  # else autograd zero-fills a gradient for `swap`
        ctx.save_for_backward(swap)
        ctx.save_for_forward(swap)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, _: torch.Tensor | None) -> torch.Tensor | None:
        (swap,) = ctx.saved_tensors
        return None if grad is None else _swap_pairs(grad, swap)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> tuple[torch.Tensor, None]:
        (swap,) = ctx.saved_tensors
        return _swap_pairs(tangent, swap), None


class _OneLipschitz(nn.Module):
    """Marker base: a parameter-free map that is a piecewise permutation, so exactly 1-Lipschitz."""

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        return 1.0


class Abs(_OneLipschitz):
    """Element-wise absolute value (gradient-norm preserving, 1-Lipschitz)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


class GroupSort(_OneLipschitz):
    """Sorts channels (dim 1) in ascending order inside consecutive groups of `group_size`."""

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1 (got {group_size})")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        n = self.group_size
        if c % n:
            raise ValueError(f"GroupSort({n}) needs a channel count divisible by {n} (got {c})")
        if n == 1:
            return x
        if n == 2:
            if not torch.is_grad_enabled():
                return _sorted_pairs(x, with_mask=False)[0]  # no backward: no mask
            return apply_function(_SortPairs, x)[0]
        return x.unflatten(1, (c // n, n)).sort(dim=2).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class GroupSort2(GroupSort):
    """GroupSort with pairs: (min, max) of each pair of channels."""

    def __init__(self) -> None:
        super().__init__(2)

    def extra_repr(self) -> str:
        return ""


class FullSort(_OneLipschitz):
    """Sorts all channels (dim 1) in ascending order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sort(dim=1).values


class MaxMin(_OneLipschitz):
    """Anil et al. (2019): splits channels in halves (a, b) and returns (max(a, b), min(a, b))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % 2:
            raise ValueError(f"MaxMin needs an even channel count (got {c})")
        a, b = x.chunk(2, dim=1)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=1)


class Householder(nn.Module):
    """Householder activation (Singla et al., 2022), deel-lip's two-halves form.

    Channels are split in halves (x1, x2); each pair z = (x1, x2) is kept when its projection on
    the unit normal n(θ) = (sin θ/2, −cos θ/2) is <= 0 and reflected across the line n(θ)ᵀz = 0
    otherwise. The map is continuous and piecewise orthogonal, hence 1-Lipschitz. θ is learnt
    per pair; θ = π/2 (the default) makes it equal to a sorted pair, like MaxMin.
    """

    def __init__(self, channels: int, theta: float = math.pi / 2) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"Householder needs an even channel count (got {channels})")
        self.channels = channels
        self.theta = nn.Parameter(torch.full((channels // 2,), float(theta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        theta = self.theta.view(shape)
        selector = x1 * torch.sin(theta / 2) - x2 * torch.cos(theta / 2)
        cos, sin = torch.cos(theta), torch.sin(theta)
        y1 = x1 * cos + x2 * sin
        y2 = x1 * sin - x2 * cos
        keep = selector <= 0
        return torch.cat((torch.where(keep, x1, y1), torch.where(keep, x2, y2)), dim=1)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
