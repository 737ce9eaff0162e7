"""Pooling and downsampling layers with exact L2 Lipschitz constants.

Windows of size k and stride s put each pixel in at most m = ceil(kh/sh)·ceil(kw/sw) windows;
the scaled average and the L2-norm pools are then sqrt(m)-Lipschitz, exactly 1 when the windows
do not overlap (stride = kernel size, the default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import apply_function

__all__ = [
    "InvertibleDownsampling",
    "ScaledAvgPool2d",
    "ScaledGlobalAvgPool2d",
    "ScaledL2NormPool2d",
    "pool_windows",
    "window_overlap",
]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """(v, v) for an int, else the first two entries of `v` as ints (a layer's 2-D geometry;
    conv.py, bounds.py and rounding.py take it from here)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window_overlap(kernel_size: tuple[int, int], stride: tuple[int, int]) -> int:
    """Most windows any one pixel belongs to (unpadded, undilated windows)."""
    return math.ceil(kernel_size[0] / stride[0]) * math.ceil(kernel_size[1] / stride[1])


def pool_windows(
    size: int,
    kernel: int,
    stride: int,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> list[tuple[list[int], int]]:
    """The windows of one axis of a torch pooling layer, placed as torch places them.

    For each output: the input indices it reads (those inside the input) and its span in the
    padded input, which `AvgPool2d(count_include_pad=True)` divides by. Padding, dilation and
    `ceil_mode` (a last window that starts inside the input or its left padding) included.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    windows = []
    for o in range(max(out, 0)):
        start = o * stride - padding
        inside = [i for i in range(start, start + span, dilation) if 0 <= i < size]
        windows.append((inside, min(start + span, size + padding) - start))
    return windows


class _WindowPool(nn.Module):
    def __init__(
        self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(
                f"kernel_size and stride must be >= 1 (got {self.kernel_size}, {self.stride})"
            )
        self.area = self.kernel_size[0] * self.kernel_size[1]

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        return math.sqrt(window_overlap(self.kernel_size, self.stride))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ScaledAvgPool2d(_WindowPool):
    """deel-lip's `ScaledAveragePooling2D`: average pooling times sqrt(kh·kw) (window sum / √n)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride) * math.sqrt(self.area)


class ScaledL2NormPool2d(_WindowPool):
    """deel-lip's `ScaledL2NormPooling2D`: the L2 norm of each window.

    The square root is taken of max(sum of squares, eps²), which keeps the gradient finite on
    all-zero windows and changes the value by at most eps; the map stays 1-Lipschitz.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(kernel_size, stride)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == self.kernel_size and x.ndim == 4:
            return apply_function(_WindowNorm, x, self.kernel_size, self.eps)[0]
        sq = F.avg_pool2d(x.square(), self.kernel_size, self.stride) * self.area
        return torch.sqrt(sq.clamp_min(self.eps**2))


class _WindowNorm(torch.autograd.Function):
    """max(‖window‖₂, eps) over non-overlapping (kh, kw) windows, as one autograd node.

    Its derivative is x / y, broadcast over each window (0 where y = eps). Both directions
    take the input as (N, C, Ho, kh, W), whose window rows are contiguous slices, and sum or
    broadcast along them before the columns: forward and backward together are 1.7-3× faster
    than `avg_pool2d` of x² and a broadcast over (kh, kw) windows on this CPU. Rows and columns
    past the last whole window, which `avg_pool2d` drops, get gradient 0.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: torch.Tensor, kernel_size: tuple[int, int], eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        whole = _whole_windows(x, kernel_size)  # returned too: backward reuses the crop
        return _window_sums(whole, whole, kernel_size).clamp_min_(eps * eps).sqrt_(), whole

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, kernel_size, eps = inputs
        y, whole = output
        ctx.kernel_size, ctx.eps, ctx.input_shape = kernel_size, eps, x.shape
        ctx.mark_non_differentiable(whole)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(whole, y)
        ctx.save_for_forward(whole, y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, _: torch.Tensor | None) -> tuple:
        if grad is None:
            return None, None, None
        whole, y = ctx.saved_tensors
        kh, kw = ctx.kernel_size
        scale = _over_norm(grad, y, ctx.eps)
        if kw > 1:  # repeat each column kw times: (N, C, Ho, Wo) -> (N, C, Ho, Wo·kw)
            scale = torch.stack([scale] * kw, dim=-1).flatten(-2)
        rows = whole.unflatten(2, (whole.shape[2] // kh, kh))
        inner = (rows * scale.unsqueeze(3)).flatten(2, 3)
        if inner.shape == ctx.input_shape:
            return inner, None, None
        out = inner.new_zeros(ctx.input_shape)
        out[..., : inner.shape[-2], : inner.shape[-1]] = inner
        return out, None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_: object) -> tuple[torch.Tensor, None]:
        whole, y = ctx.saved_tensors
        dot = _window_sums(whole, _whole_windows(tangent, ctx.kernel_size), ctx.kernel_size)
        return _over_norm(dot, y, ctx.eps), None


def _whole_windows(x: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """x cropped to whole windows, contiguous (no copy when it already is both)."""
    (kh, kw), (h, w) = kernel_size, x.shape[-2:]
    return x[..., : h - h % kh, : w - w % kw].contiguous()


def _window_sums(a: torch.Tensor, b: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Σ a·b over each non-overlapping window of two (N, C, Ho·kh, Wo·kw) contiguous tensors."""
    kh, kw = kernel_size
    ra, rb = (t.unflatten(2, (t.shape[2] // kh, kh)) for t in (a, b))
    rows = ra[:, :, :, 0] * rb[:, :, :, 0]  # (N, C, Ho, W): the window's rows, summed
    for i in range(1, kh):
        rows = torch.addcmul(rows, ra[:, :, :, i], rb[:, :, :, i])
    cols = rows.unflatten(-1, (rows.shape[-1] // kw, kw))
    sums = cols[..., 0]
    for j in range(1, kw):
        sums = sums + cols[..., j]
    return sums.contiguous()


def _over_norm(t: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """t / y where the window norm y exceeds eps (the clamp's gradient is 0 below it)."""
    return torch.where(y > eps, t / y, 0.0)


class ScaledGlobalAvgPool2d(nn.Module):
    """Global average pooling times sqrt(H·W): (N, C, H, W) -> (N, C), exactly 1-Lipschitz."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x.mean(dim=(-2, -1)) * math.sqrt(h * w)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        return 1.0


class InvertibleDownsampling(nn.PixelUnshuffle):
    """Space-to-depth by `factor` (a permutation of the pixels): an isometry, 1-Lipschitz."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__(factor)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        return 1.0
