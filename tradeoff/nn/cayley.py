"""Orthogonal layers by the Cayley transform (Trockman & Kolter, ICLR 2021): dense, and
convolutions in the Fourier domain with circular padding.

The Cayley transform of a skew-Hermitian A is the unitary (I + A)⁻¹(I − A); for a tall block
[U; V] it is the semi-orthogonal [(I + A)⁻¹(I − A); −2V(I + A)⁻¹] with A = U − Uᴴ + VᴴV. A
circular convolution is block-diagonalised by the 2-D FFT, so `CayleyConv2d` applies one
Cayley-transformed (c_out × c_in) matrix Q(ν) per frequency ν of its input's grid.

Soundness: nothing is assumed orthogonal. The map a Fourier layer computes is the real
circular convolution whose frequency blocks are the Q(ν) in use (float32), with the blocks
of the self-conjugate columns (ν_w = 0 and, for an even width, W/2) averaged with their
conjugate partners, which is what `irfft2` makes of them; its norm, the largest block norm, is
computed from those blocks in float64 (`fourier_norm`). The FFTs' own rounding is bounded in
`tradeoff.rounding` (`fourier_error`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import families
from .operator_norm import REL_SLACK, block_norms
from .parametrizations import CachedParametrization
from .pooling import InvertibleDownsampling

__all__ = [
    "CayleyConv2d",
    "CayleyOrthogonal",
    "FourierConv2d",
    "cayley",
    "cayley_linear",
    "strided",
]


def cayley(w: torch.Tensor) -> torch.Tensor:
    """The Cayley transform of each (…, m, n) matrix: orthonormal columns (m ≥ n) or rows."""
    m, n = w.shape[-2:]
    if n > m:
        return cayley(w.transpose(-2, -1)).transpose(-2, -1)
    u, v = w[..., :n, :], w[..., n:, :]
    eye = torch.eye(n, dtype=w.dtype, device=w.device)
    a = u - u.mH + v.mH @ v
    inv = torch.linalg.inv(eye + a)
    return torch.cat((inv @ (eye - a), -2 * v @ inv), dim=-2)


class CayleyOrthogonal(CachedParametrization):
    """Parametrization of an `nn.Linear` weight: cayley(α·W/‖W‖_F), α learnt (initially
    ‖W‖_F); eval mode caches it."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.alpha = nn.Parameter(weight.detach().norm().reshape(()).clone())

    def _inputs(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (weight, self.alpha)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        return cayley(self.alpha.to(weight.dtype) * weight / weight.norm())


def cayley_linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    """An `nn.Linear` whose weight is the Cayley transform of its free weight: orthonormal
    rows or columns, so its bound is its exact spectral norm (1 up to float32 rounding)."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    if bias:
        nn.init.zeros_(layer.bias)
    parametrize.register_parametrization(layer, "weight", CayleyOrthogonal(layer.weight))
    return layer


# -- the Fourier domain ------------------------------------------------------------------------


def _shift(size: tuple[int, int], kernel: tuple[int, int], device: torch.device) -> torch.Tensor:
    """exp(−2πi(ν_h s_h/H + ν_w s_w/W)) on the rfft grid, s = (k − 1)//2: centres the kernel,
    so the layer correlates like a `same` convolution."""
    (h, w), (kh, kw) = size, kernel
    nu_h = torch.arange(h, dtype=torch.float64)[:, None] * ((kh - 1) // 2) / h
    nu_w = torch.arange(w // 2 + 1, dtype=torch.float64)[None, :] * ((kw - 1) // 2) / w
    return torch.exp(-2j * math.pi * (nu_h + nu_w)).to(device)


def kernel_spectrum(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The (H·(W//2+1), out, in) frequency blocks of the circular cross-correlation by
    `weight` (out, in, kh, kw) on an H×W grid, centred as a `same` convolution."""
    out_c, in_c, kh, kw = weight.shape
    spectrum = torch.fft.rfft2(weight, s=size).conj()
    spectrum = spectrum * _shift(size, (kh, kw), weight.device).to(spectrum.dtype)
    return spectrum.reshape(out_c, in_c, -1).permute(2, 0, 1)


def apply_blocks(blocks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """irfft2(Q(ν)·rfft2(x)(ν)): the real map with frequency blocks `blocks` (F, out, in)."""
    batch, in_c, h, w = x.shape
    spectrum = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(-1, in_c, batch)
    out = (blocks @ spectrum).reshape(h, w // 2 + 1, -1, batch).permute(3, 2, 0, 1)
    return torch.fft.irfft2(out, s=(h, w))


def hermitian_blocks(blocks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The frequency blocks (complex128) of the real map `apply_blocks` computes: irfft2 keeps
    the Hermitian part (Q(ν) + conj Q(−ν))/2 of the blocks in the self-conjugate columns."""
    h, w = size
    q = blocks.detach().to(torch.complex128).reshape(h, w // 2 + 1, *blocks.shape[1:]).clone()
    partner = (-torch.arange(h)) % h
    for col in {0, w // 2} if w % 2 == 0 else {0}:
        q[:, col] = (q[:, col] + q[partner, col].conj()) / 2
    return q.reshape(blocks.shape)


def fourier_norm(blocks: torch.Tensor, size: tuple[int, int]) -> float:
    """Exact norm (times 1 + REL_SLACK, in float64) of the map `apply_blocks(blocks, ·)`."""
    return float(block_norms(hermitian_blocks(blocks, size)).max()) * (1 + REL_SLACK)


def spatial_kernel(blocks: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple]:
    """An (out, in, 2P_h+1, 2P_w+1) kernel and the circular padding (P_h, P_w) with which
    `nn.Conv2d(padding_mode="circular")` computes the map of `blocks` on an H×W input."""
    h, w = size
    q = hermitian_blocks(blocks, size)
    impulse = torch.fft.irfft2(q.reshape(h, w // 2 + 1, *q.shape[1:]).permute(2, 3, 0, 1), s=size)
    ph, pw = h // 2, w // 2
    rows = (ph - torch.arange(2 * ph + 1)) % h
    cols = (pw - torch.arange(2 * pw + 1)) % w
    kernel = impulse[:, :, rows][:, :, :, cols].clone()
    if h % 2 == 0:  # taps 0 and 2P_h read the same pixel: keep one
        kernel[:, :, -1] = 0
    if w % 2 == 0:
        kernel[:, :, :, -1] = 0
    return kernel, (ph, pw)


def abs_norm(blocks: torch.Tensor) -> float:
    """max over blocks of ‖|Q(ν)|‖₂ (entrywise modulus), in float64: the componentwise
    rounding bounds of products scale with it."""
    return float(block_norms(blocks.detach().abs().to(torch.float64)).max()) * (1 + REL_SLACK)


def fourier_stage_error(
    blocks: torch.Tensor, size: tuple[int, int], weight: torch.Tensor, u: float
) -> tuple[float, float]:
    """(r, R): `apply_blocks(blocks, x)` as computed is within r·‖x‖ of the exact map, and
    R ≥ ‖the map‖: rfft2, the complex products (a sum of 2·in real products per entry, √2 for
    the modulus) and irfft2, each relative to what it is applied to."""
    from ..rounding import _dot, fft_error  # the float32 product model lives there

    big = abs_norm(blocks)
    terms = 2 * blocks.shape[-1]
    c = math.sqrt(2) * _dot(terms, weight.dtype, weight.device, "matmul")
    eps = fft_error(size, u)
    return big * ((1 + eps) ** 2 * (1 + c) - 1), big


class FourierConv2d(nn.Module):
    """Shared plumbing of the Fourier-domain convolutions on a fixed H×W grid: a free kernel of
    `kernel_in` input channels, the bias, the frequency blocks cayley(α·K̂(ν)/‖K̂‖_F)
    (recomputed per training step, cached in eval), the bound's shape check and the export as
    a circular `nn.Conv2d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        input_size: tuple[int, int],
        bias: bool,
        kernel_in: int,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_in, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        with torch.no_grad():
            spectrum = kernel_spectrum(self.weight, self.input_size)
        self.alpha = nn.Parameter(spectrum.norm().reshape(()).float())
        self._cache: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None

    def compute_blocks(self) -> torch.Tensor:
        """cayley(α·K̂(ν)/‖K̂‖_F) at every frequency ν of the rfft grid."""
        spectrum = kernel_spectrum(self.weight, self.input_size)
        return cayley(self.alpha.to(self.weight.dtype) * spectrum / spectrum.norm())

    def _free(self) -> tuple[torch.Tensor, ...]:
        return tuple(p for p in self.parameters() if p is not self.bias)

    def blocks(self) -> torch.Tensor:
        """The frequency blocks in use: recomputed in training, cached in eval until a free
        parameter changes in content."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.compute_blocks()
        now = self._free()
        if self._cache is not None and all(
            a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(now, self._cache[0], strict=True)
        ):
            return self._cache[1]
        blocks = self.compute_blocks()
        self._cache = (tuple(p.detach().clone() for p in now), blocks)
        return blocks

    def _check_size(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"{type(self).__name__} was built for {self.input_size[0]}×{self.input_size[1]} "
                f"inputs (its Fourier blocks are per frequency of that grid), got "
                f"{tuple(x.shape[-2:])}; build it with input_size={tuple(x.shape[-2:])}"
            )

    def _add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.view(-1, 1, 1)

    def _bound_shape(self, input_shape: tuple[int, ...]) -> None:
        if tuple(input_shape[-2:]) != self.input_size:
            raise ValueError(
                f"{type(self).__name__} is bounded on its own {self.input_size} grid, "
                f"not on inputs of shape {tuple(input_shape)}"
            )

    def circular_conv(self, blocks: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
        """A plain circular `nn.Conv2d` computing the map of `blocks` plus `bias`."""
        kernel, padding = spatial_kernel(blocks, self.input_size)
        out_c, in_c, kh, kw = kernel.shape
        conv = nn.Conv2d(
            in_c, out_c, (kh, kw), padding=padding, padding_mode="circular", bias=bias is not None
        )
        with torch.no_grad():
            conv.weight.copy_(kernel)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv.to(self.weight.dtype)


class CayleyConv2d(FourierConv2d):
    """Orthogonal convolution by the Cayley transform in the Fourier domain (Trockman &
    Kolter 2021), stride 1 on a fixed `input_size` grid, circular padding: per frequency,
    Q(ν) = cayley(α·K̂(ν)/‖K̂‖_F), K̂ the centred spectrum of the free kernel, α learnt."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        input_size: tuple[int, int] = (8, 8),
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, input_size, bias, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        return self._add_bias(apply_blocks(self.blocks().to(_complex(x.dtype)), x))

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """The exact norm of the map in use (`fourier_norm` of its float blocks)."""
        self._bound_shape(input_shape)
        with torch.no_grad():
            return fourier_norm(self.blocks(), self.input_size)

    def forward_error(self, input_shape: tuple[int, ...], u: float) -> tuple[float, float]:
        """(slope, offset) of the rounding of the FFTs, the products and the bias
        (`tradeoff.rounding`'s protocol)."""
        with torch.no_grad():
            err, big = fourier_stage_error(self.blocks(), self.input_size, self.weight, u)
        slope = err + u * (big + err)
        positions = self.input_size[0] * self.input_size[1]
        bias = 0.0 if self.bias is None else float(self.bias.detach().double().norm())
        return slope, u * bias * math.sqrt(positions)

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> nn.Conv2d:
        """The same map as a plain circular `nn.Conv2d` with a kernel as large as the grid."""
        with torch.no_grad():
            bias = None if self.bias is None else self.bias.detach()
            return self.circular_conv(self.blocks(), bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"input_size={self.input_size}, bias={self.bias is not None}"
        )


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def strided(
    make: Callable[..., nn.Module],
    c_in: int,
    c_out: int,
    kernel_size: int,
    stride: int,
    input_size: tuple[int, int],
) -> nn.Module:
    """A Fourier convolution of stride s with `same` output size ceil(n/s): zero padding to a
    multiple of s (bottom/right), an invertible s×s downsampling (a permutation) and the
    stride-1 layer on s²·c_in channels with a kernel of ceil(k/s) (Trockman & Kolter's
    strided convolutions). `make(c_in, c_out, kernel_size, input_size)` builds that layer."""
    if stride == 1:
        return make(c_in, c_out, kernel_size, input_size)
    h, w = input_size
    out = (-(-h // stride), -(-w // stride))
    pad = (0, out[1] * stride - w, 0, out[0] * stride - h)
    layers: list[nn.Module] = [nn.ZeroPad2d(pad)] if any(pad) else []
    inner = make(c_in * stride * stride, c_out, -(-kernel_size // stride), out)
    return nn.Sequential(*layers, InvertibleDownsampling(stride), inner)


def _cayley_conv(c_in, c_out, kernel_size, stride, input_size):
    return strided(CayleyConv2d, c_in, c_out, kernel_size, stride, input_size)


families.register(
    families.LayerFamily(
        name="cayley",
        summary="orthogonal layers by the Cayley transform, convolutions in the Fourier domain "
        "with circular padding (Trockman & Kolter 2021)",
        conv=_cayley_conv,
        linear=cayley_linear,
    )
)
