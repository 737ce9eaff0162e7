"""Orthogonal convolutions by the inverse square root in the Fourier domain (LOT, Xu, Li & Li,
NeurIPS 2022).

The input, zero-padded by k // 2 on each side, sits on a grid of N_h × N_w pixels on which the
convolution is circular, so the 2-D FFT turns it into one (out × in) matrix W(ω) per frequency.
Each is replaced by its polar factor W (WᴴW)^(-1/2) (or (WWᴴ)^(-1/2) W, whichever Gram matrix
is smaller), the inverse square root taken by `iterations` coupled Newton–Schulz steps; the
output is cropped back to the input's size. The grid is the smallest at least n + 2·(k // 2)
whose size has no prime factor above 5 (`fast_length`), so the FFTs are the radix-2/3/4/5
passes that `tradeoff.rounding` models. Strides fold the input into channels first.

Finite Newton iterations are not exactly orthogonal, and the layer applies the float32 (or
float64) matrices it computed. Padding is an isometric embedding, the crop a projection, and
rfft2/irfft2 (with Re on the self-conjugate frequencies) are Parseval-normalised, so the
layer's norm is at most the largest spectral norm of the matrices in use, computed from them in
float64 (`lipschitz_bound`). Dense layers and convolutions whose kernel equals their stride
take the polar factor of one matrix (`PolarNewton`) on a standard `nn.Linear`/`nn.Conv2d`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from . import families
from .operator_norm import spectral_norm
from .parametrizations import CachedParametrization
from .soc import (
    check_geometry,
    dense_conv,
    eval_weight,
    fold_layers,
    fold_stride,
    folded_size,
)

__all__ = [
    "FourierPolar",
    "LOTConv2d",
    "PolarNewton",
    "fast_length",
    "kernel_spectrum",
    "lot_conv",
    "lot_linear",
    "polar_newton",
]

_REGULARISATION = 1e-4  # added to the Gram matrix, as the authors do: keeps it invertible


def fast_length(n: int) -> int:
    """The smallest length >= n whose only prime factors are 2, 3 and 5."""
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def polar_newton(matrices: torch.Tensor, iterations: int) -> torch.Tensor:
    """The polar factor of each (out × in) matrix of a batch, by `iterations` coupled
    Newton–Schulz steps for the inverse square root of its smaller Gram matrix S.

    S (plus 1e-4·I) is divided by its Frobenius norm so its eigenvalues lie in (0, 1], where
    the iteration converges; in exact arithmetic every singular value of the result stays in
    (0, 1] after any number of steps (s ↦ s(3 − s²)/2 maps (0, 1] into itself).
    """
    wide = matrices.shape[-2] <= matrices.shape[-1]
    gram = matrices @ matrices.mH if wide else matrices.mH @ matrices
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    gram = gram + _REGULARISATION * eye
    norm = torch.linalg.matrix_norm(gram, keepdim=True) + _REGULARISATION
    y, z = gram / norm, eye.expand_as(gram)
    for _ in range(iterations):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
    polar = z @ matrices if wide else matrices @ z
    return polar / norm.sqrt()


def kernel_spectrum(kernel: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The (N_h, N_w // 2 + 1, out, in) frequency matrices of the `same` convolution with the
    odd `kernel` (cross-correlation, as `F.conv2d`), made circular on the grid (N_h, N_w)."""
    k = kernel.shape[-1]
    p = k // 2
    n_h, n_w = grid
    flipped = F.pad(kernel.flip(-2, -1), (0, n_w - k, 0, n_h - k)).roll((-p, -p), (-2, -1))
    return torch.fft.rfft2(flipped).permute(2, 3, 0, 1)


def circular_apply(
    x: torch.Tensor, spectrum: torch.Tensor, padding: int, grid: tuple[int, int]
) -> torch.Tensor:
    """x zero-padded by `padding` into the `grid`, multiplied by `spectrum` per frequency (rfft2
    and irfft2), and cropped back to x's size."""
    n_h, n_w = x.shape[-2:]
    g_h, g_w = grid
    x = F.pad(x, (padding, g_w - n_w - padding, padding, g_h - n_h - padding))
    freq = torch.fft.rfft2(x).permute(2, 3, 1, 0)  # (N_h, F_w, in, batch)
    out = (spectrum @ freq).permute(3, 2, 0, 1)
    y = torch.fft.irfft2(out, s=grid)
    return y[..., padding : padding + n_h, padding : padding + n_w]


class FourierPolar(CachedParametrization):
    """Kernel ↦ the polar factors of its frequency matrices on the grid `self.grid` (set by the
    layer for the input it sees): a (N_h, N_w // 2 + 1, out, in) complex tensor."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = int(iterations)
        self.grid: tuple[int, int] = (1, 1)

    def cache_settings(self) -> tuple:
        return (self.iterations, self.grid)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        return polar_newton(kernel_spectrum(weight, self.grid), self.iterations)


class PolarNewton(CachedParametrization):
    """W ↦ its polar factor by `polar_newton`, W seen as an (out × rest) matrix: dense layers
    and kernel-equals-stride convolutions."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = int(iterations)

    def cache_settings(self) -> tuple:
        return (self.iterations,)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.reshape(weight.shape[0], -1)
        return polar_newton(matrix, self.iterations).reshape(weight.shape)


def _check_iterations(iterations: object) -> int:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0 (got {iterations!r})")
    return iterations


def _polar_parametrize(iterations: int) -> Callable[[nn.Module], nn.Module]:
    def constrain(layer: nn.Module) -> nn.Module:
        nn.init.orthogonal_(layer.weight.data.view(layer.weight.shape[0], -1))
        parametrize.register_parametrization(layer, "weight", PolarNewton(iterations))
        return layer

    return constrain


def lot_linear(fan_in: int, fan_out: int, bias: bool = True, *, iterations: int = 10) -> nn.Linear:
    """A dense layer with the Newton–Schulz polar factor of its weight (a standard `nn.Linear`)."""
    layer = _polar_parametrize(_check_iterations(iterations))(nn.Linear(fan_in, fan_out, bias))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class LOTConv2d(nn.Module):
    """Layer-wise orthogonal convolution: `same` output size ceil(n / stride), odd kernel.

    `iterations` Newton–Schulz steps per frequency (the authors' 10). The weight is
    initialised as the identity on the first min(in, out) channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = True,
        *,
        iterations: int = 10,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, stride) < 1:
            raise ValueError(
                f"channels and stride must be >= 1 (got {in_channels}, {out_channels}, {stride})"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"LOTConv2d needs an odd kernel_size (got {kernel_size}); a kernel equal to the "
                "stride is a dense map after space-to-depth: use lot_conv"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.iterations = _check_iterations(iterations)
        fan_in = in_channels * stride * stride
        self.weight = nn.Parameter(torch.empty(out_channels, fan_in, kernel_size, kernel_size))
        nn.init.dirac_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        parametrize.register_parametrization(self, "weight", FourierPolar(iterations), unsafe=True)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The FFT grid for a (folded) feature map of `size`."""
        pad = 2 * (self.kernel_size // 2)
        return (fast_length(size[0] + pad), fast_length(size[1] + pad))

    def spectrum(self, size: tuple[int, int]) -> torch.Tensor:
        """The frequency matrices the layer applies to a folded feature map of `size` (cached in
        eval mode, recomputed when the size changes)."""
        self.parametrizations.weight[0].grid = self.grid(size)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fold_stride(x, self.stride)
        size = (x.shape[-2], x.shape[-1])
        y = circular_apply(x, self.spectrum(size), self.kernel_size // 2, self.grid(size))
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def spectrum_in_use(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """The eval-mode frequency matrices for inputs of `input_shape` (C, H, W), detached."""
        size = folded_size((int(input_shape[-2]), int(input_shape[-1])), self.stride)
        return eval_weight(self, lambda: self.spectrum(size))

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """The largest spectral norm of the frequency matrices in use on inputs of
        `input_shape`, in float64 (times 1 + REL_SLACK): the norm of the circular map, which
        bounds the padded and cropped one."""
        return spectral_norm(self.spectrum_in_use(input_shape))

    def vanilla_export(self, input_shape: tuple[int, ...]) -> nn.Sequential:
        """The eval-mode map as plain layers: zero padding (and space-to-depth for a stride)
        onto the grid, one circular `nn.Conv2d` with the real N_h × N_w kernel of the matrices
        in use (an odd size, one zero row or column added to an even grid), and the crop as a
        negative `nn.ZeroPad2d`."""
        spectrum = self.spectrum_in_use(input_shape)
        size = (int(input_shape[-2]), int(input_shape[-1]))
        folded = folded_size(size, self.stride)
        (g_h, g_w), p = self.grid(folded), self.kernel_size // 2
        layers = fold_layers(size, self.stride)
        onto = (p, g_w - folded[1] - p, p, g_h - folded[0] - p)
        layers.append(nn.ZeroPad2d(onto))
        # The map is the circular convolution y = Σ_d K[d]·x[· − d] with K = irfft2 of the
        # matrices; nn.Conv2d correlates, reading x[· + a − P]: tap a holds K[(P − a) mod N].
        response = torch.fft.irfft2(spectrum.permute(2, 3, 0, 1), s=(g_h, g_w))
        k_h, k_w = g_h + 1 - g_h % 2, g_w + 1 - g_w % 2
        pad_h, pad_w = (k_h - 1) // 2, (k_w - 1) // 2
        rows = (pad_h - torch.arange(g_h)) % g_h
        cols = (pad_w - torch.arange(g_w)) % g_w
        kernel = response.new_zeros(*response.shape[:2], k_h, k_w)
        kernel[:, :, :g_h, :g_w] = response[:, :, rows][:, :, :, cols]
        conv = nn.Conv2d(
            kernel.shape[1],
            self.out_channels,
            (k_h, k_w),
            padding=(pad_h, pad_w),
            padding_mode="circular",
            bias=self.bias is not None,
        )
        conv.weight.data.copy_(kernel)
        if self.bias is not None:
            conv.bias.data.copy_(self.bias.detach())
        layers += [conv, nn.ZeroPad2d(tuple(-v for v in onto))]
        return nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, iterations={self.iterations}, bias={self.bias is not None}"
        )


def lot_conv(
    c_in: int,
    c_out: int,
    kernel_size: int = 3,
    stride: int = 1,
    input_size: tuple[int, int] = (1, 1),
    *,
    iterations: int = 10,
) -> nn.Module:
    """The family's convolution, `same` output size ceil(n / stride): `LOTConv2d` for an odd
    kernel; a kernel equal to the stride (a 1×1 map, or a 2×2 stride-2 downsampling) is a dense
    map after space-to-depth, a standard `nn.Conv2d` with the polar factor `PolarNewton`."""
    _check_iterations(iterations)
    check_geometry(kernel_size, stride, c_in, c_out)
    if kernel_size != stride:
        return LOTConv2d(c_in, c_out, kernel_size, stride, iterations=iterations)
    return dense_conv(c_in, c_out, stride, input_size, _polar_parametrize(iterations))


families.register(
    families.LayerFamily(
        name="lot",
        summary="orthogonal convolutions by Newton–Schulz in the Fourier domain (Xu et al. 2022)",
        conv=lambda c_in, c_out, k, s, size, lot_iterations=10: lot_conv(
            c_in, c_out, k, s, size, iterations=lot_iterations
        ),
        linear=lambda fan_in, fan_out, bias, lot_iterations=10: lot_linear(
            fan_in, fan_out, bias, iterations=lot_iterations
        ),
        options={"lot_iterations": 10},
    )
)
