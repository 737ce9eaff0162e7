"""Skew-orthogonal convolutions (SOC, Singla & Feizi, ICML 2021).

A convolution L_A whose kernel is skew-symmetric, A = W − Wᵀ (Wᵀ: channels swapped, taps
flipped), is a skew-symmetric operator under `same` zero padding, so exp(L_A) is orthogonal.
The layer computes the exponential's series truncated to `terms` terms, Σ_{k<K} L_A^k x / k!,
after rescaling A by the authors' cheap estimate of its norm (the smallest of four power
iterations on reshapes of the kernel, times `correction`). Strides fold the input into
channels (space-to-depth) first; channels are padded with zeros to the kernel's width and the
output keeps the first `out_channels`.

The truncated series is not orthogonal, and the rescaling does not bound ‖L_A‖. The bound is
therefore computed for what the layer computes: ρ ≥ ‖L_A‖ is the exact norm of the circular
convolution that embeds the zero-padded one (`conv2d_operator_norm`), and as L_A is skew, hence
normal with eigenvalues in i[−ρ, ρ], ‖Σ_{k<K} L_A^k/k!‖ ≤ max_{|t|≤ρ} |Σ_{k<K} (it)^k/k!|
(`truncated_exp_bound`). Dense layers and convolutions whose kernel equals their stride (a 1×1
map after space-to-depth) take the exact exponential of a skew matrix instead (`SkewExp`) on a
standard `nn.Linear`/`nn.Conv2d`, bounded by the exact norm of the weight in use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from . import families
from .operator_norm import REL_SLACK, conv2d_operator_norm
from .parametrizations import CachedParametrization

__all__ = [
    "SOCConv2d",
    "SkewExp",
    "SkewKernel",
    "check_geometry",
    "dense_conv",
    "eval_weight",
    "fold_layers",
    "fold_stride",
    "folded_padding",
    "folded_size",
    "soc_conv",
    "soc_linear",
    "transpose_kernel",
    "truncated_exp_bound",
]


def folded_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """The spatial size after `fold_stride`: ceil(n / stride) per axis."""
    return (math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def fold_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Space-to-depth by `stride` (an isometry), after zero-padding the bottom and right to a
    multiple of it: how the orthogonal convolutions of Singla & Feizi and Xu et al. stride."""
    if stride == 1:
        return x
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return F.pixel_unshuffle(x, stride)


def folded_padding(size: tuple[int, int], stride: int) -> tuple[int, int, int, int]:
    """The zero padding (left, right, top, bottom) `fold_stride` adds to an input of `size`."""
    return (0, -size[1] % stride, 0, -size[0] % stride)


def fold_layers(size: tuple[int, int], stride: int) -> list[nn.Module]:
    """`fold_stride` on inputs of `size` as plain layers (for `vanilla_export`)."""
    if stride == 1:
        return []
    padding = folded_padding(size, stride)
    return [*([nn.ZeroPad2d(padding)] if any(padding) else []), nn.PixelUnshuffle(stride)]


def transpose_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint of a `same` zero-padded convolution with an odd `kernel`."""
    return kernel.transpose(0, 1).flip(2, 3)


def check_geometry(kernel_size: int, stride: int, in_channels: int, out_channels: int) -> None:
    """Refuse what the orthogonal convolutions cannot build, naming the value."""
    if min(in_channels, out_channels) < 1 or stride < 1:
        raise ValueError(
            f"channels and stride must be >= 1 (got {in_channels}, {out_channels}, {stride})"
        )
    if kernel_size < 1 or (kernel_size % 2 == 0 and kernel_size != stride):
        raise ValueError(
            f"kernel_size must be odd, or equal to the stride (got {kernel_size}, stride "
            f"{stride}): only an odd kernel keeps `same` zero padding symmetric"
        )


def eval_weight(module: nn.Module, fetch: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`fetch()` as eval mode computes it (cached there), detached; a module in training mode
    is switched to eval mode for it and back."""
    if not module.training:
        with torch.no_grad():
            return fetch().detach()
    module.eval()
    try:
        with torch.no_grad():
            return fetch().detach()
    finally:
        module.train()


# -- the certified norm of the truncated exponential ---------------------------------------------


def truncated_exp_bound(rho: float, terms: int, grid: int = 8192) -> float:
    """max over |t| ≤ ρ of |Σ_{k<terms} (it)^k/k!|, from above: the norm of the truncated
    exponential of any skew-symmetric (so normal) operator of norm at most ρ.

    |p(it)|² = p(it)·p(−it) = 1 + Σ_j d_j t^{2j} with exact rational d_j, zero for 2j < terms
    (the product agrees with e^{it}e^{−it} = 1 up to that degree). The remainder is maximised on
    a grid; between grid points it exceeds the chord by at most h²/8 times a bound on its second
    derivative, and its float64 evaluation errs by far less than 1e-12 of Σ|d_j|ρ^2j.
    """
    if terms < 1 or not rho >= 0 or math.isinf(rho):
        raise ValueError(f"terms must be >= 1 and rho finite and >= 0 (got {terms}, {rho})")
    coef = [Fraction(1, math.factorial(k)) for k in range(terms)]
    d = {}
    for j in range(1, terms):  # p(z)p(−z) has only even powers, up to 2(terms − 1)
        c = sum(
            coef[a] * coef[2 * j - a] * (-1) ** (2 * j - a)
            for a in range(max(0, 2 * j - terms + 1), min(terms, 2 * j + 1))
        )
        if c:
            d[j] = float(c * (-1) ** j)
    if not d or rho == 0:
        return 1.0
    t = torch.linspace(0.0, rho, grid, dtype=torch.float64)
    values = sum(dj * t ** (2 * j) for j, dj in d.items())
    # Between grid points h apart, r is at most its chord plus h²/8·max|r''|.
    curvature = sum(2 * j * (2 * j - 1) * abs(dj) * rho ** (2 * j - 2) for j, dj in d.items())
    size = sum(abs(dj) * rho ** (2 * j) for j, dj in d.items())
    top = float(values.max()) + curvature * (rho / (grid - 1)) ** 2 / 8 + 1e-12 * size
    return math.sqrt(1.0 + max(top, 0.0)) * (1 + REL_SLACK)


def exp_series_bound(rho: float, terms: int) -> float:
    """Σ_{k<terms} ρ^k/k!: the norm bound of the truncated exponential of any operator."""
    return math.fsum(rho**k / math.factorial(k) for k in range(terms)) * (1 + REL_SLACK)


# -- the parametrizations ---------------------------------------------------------------------


def _reshapes(kernel: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four matrices of the kernel whose norms bound the convolution's (Singla & Feizi,
    "Fantastic Four", 2021): rows (out, kh), (out, kw), out and (out, kh, kw)."""
    o, i, h, w = kernel.shape
    return (
        kernel.permute(0, 2, 1, 3).reshape(o * h, i * w),
        kernel.permute(0, 3, 1, 2).reshape(o * w, i * h),
        kernel.reshape(o, i * h * w),
        kernel.permute(0, 2, 3, 1).reshape(o * h * w, i),
    )


class SkewKernel(CachedParametrization):
    """W ↦ correction·(W − Wᵀ)/σ: the skew-symmetric kernel of `SOCConv2d`, rescaled by σ, the
    smallest of four power-iteration estimates of its reshapes' norms (persistent vectors,
    `power_iterations` steps per training step). Negation is exact in floating point, so the
    kernel in use is exactly skew-symmetric."""

    def __init__(
        self, channels: int, kernel_size: int, correction: float, power_iterations: int = 1
    ) -> None:
        super().__init__()
        self.correction = float(correction)
        self.power_iterations = int(power_iterations)
        shape = (channels, channels, kernel_size, kernel_size)
        for j, matrix in enumerate(_reshapes(torch.zeros(shape))):
            self.register_buffer(f"u{j}", F.normalize(torch.randn(matrix.shape[1]), dim=0))
            self.register_buffer(f"v{j}", F.normalize(torch.randn(matrix.shape[0]), dim=0))

    def cache_settings(self) -> tuple:
        return (self.correction,)

    def power_step(self, skew: torch.Tensor, steps: int) -> None:
        """`steps` power iterations on each reshape of `skew`, updating the vectors in place."""
        with torch.no_grad():
            for j, matrix in enumerate(_reshapes(skew.detach())):
                u, v = getattr(self, f"u{j}"), getattr(self, f"v{j}")
                for _ in range(steps):
                    v.copy_(F.normalize(matrix @ u, dim=0))
                    u.copy_(F.normalize(matrix.t() @ v, dim=0))

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        skew = weight - transpose_kernel(weight)
        if self.training and self.power_iterations:
            self.power_step(skew, self.power_iterations)
        # clones: the next training step updates the vectors in place before this backward
        sigmas = [
            getattr(self, f"v{j}").clone() @ matrix @ getattr(self, f"u{j}").clone()
            for j, matrix in enumerate(_reshapes(skew))
        ]
        sigma = torch.stack(sigmas).abs().min().clamp_min(torch.finfo(weight.dtype).tiny)
        return skew * (self.correction / sigma)


class SkewExp(CachedParametrization):
    """W ↦ exp(W − Wᵀ) cut to the layer's shape: a dense (or kernel-equals-stride convolution)
    weight with orthonormal rows or columns, up to the rounding of `torch.linalg.matrix_exp`,
    whose result is bounded as it is (the exact norm of the weight in use).

    The free parameter is the square (n × n) matrix, n the larger side of the weight.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        out, fan_in = self.shape[0], math.prod(self.shape[1:])
        q = torch.linalg.matrix_exp(weight - weight.t())
        return q[:out, :fan_in].reshape(self.shape)


def _skew_exp_parametrize(layer: nn.Module) -> nn.Module:
    """Put `SkewExp` on `layer.weight`: a free square matrix with N(0, 1/n) entries, whose
    exponential is a random-looking orthogonal matrix (as the authors initialise SOC)."""
    shape = tuple(layer.weight.shape)
    n = max(shape[0], math.prod(shape[1:]))
    free = nn.Parameter(torch.randn(n, n) / math.sqrt(n))
    del layer.weight
    layer.weight = free
    parametrize.register_parametrization(layer, "weight", SkewExp(shape), unsafe=True)
    return layer


def soc_linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    """A dense layer with weight exp(W − Wᵀ) cut to fan_out × fan_in (a standard `nn.Linear`)."""
    layer = _skew_exp_parametrize(nn.Linear(fan_in, fan_out, bias=bias))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


# -- the convolution ---------------------------------------------------------------------------


class SOCConv2d(nn.Module):
    """Skew-orthogonal convolution: `same` output size ceil(n / stride), zero padding.

    `terms` terms of the exponential's series in training, `eval_terms` in eval mode (the
    authors' 5 and 12 powers); `correction` scales the rescaled kernel (the authors' 0.7, 1 for
    1×1 kernels). `kernel_size` is odd (or equal to the stride, see `soc_conv`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = True,
        *,
        terms: int = 6,
        eval_terms: int = 13,
        correction: float | None = None,
        init_iterations: int = 50,
    ) -> None:
        super().__init__()
        check_geometry(kernel_size, stride, in_channels, out_channels)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"SOCConv2d needs an odd kernel_size (got {kernel_size}); a kernel equal to the "
                "stride is a dense map after space-to-depth: use soc_conv"
            )
        for key, value in (("terms", terms), ("eval_terms", eval_terms)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1 (got {value!r})")
        correction = (1.0 if kernel_size == 1 else 0.7) if correction is None else correction
        if not 0 < correction < math.inf:
            raise ValueError(f"correction must be > 0 and finite (got {correction})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.terms, self.eval_terms = terms, eval_terms
        self.channels = max(out_channels, in_channels * stride * stride)
        shape = (self.channels, self.channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.randn(shape) / math.sqrt(self.channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        skew = SkewKernel(self.channels, kernel_size, correction)
        skew.power_step(self.weight - transpose_kernel(self.weight), init_iterations)
        parametrize.register_parametrization(self, "weight", skew)

    def series_terms(self) -> int:
        """The number of terms the layer computes now (training or eval)."""
        return self.terms if self.training else self.eval_terms

    def series(self, x: torch.Tensor, kernel: torch.Tensor, terms: int) -> torch.Tensor:
        """Σ_{k<terms} L^k x / k! for the `same` convolution L with `kernel`."""
        p = self.kernel_size // 2
        z = term = x
        for k in range(1, terms):
            term = F.conv2d(term, kernel, padding=p) / k
            z = z + term
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fold_stride(x, self.stride)
        if x.shape[1] < self.channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))
        z = self.series(x, self.weight, self.series_terms())[:, : self.out_channels]
        return z if self.bias is None else z + self.bias.view(1, -1, 1, 1)

    def kernel_in_use(self) -> torch.Tensor:
        """The rescaled skew kernel of eval mode (cached there), detached."""
        return eval_weight(self, lambda: self.weight)

    def series_norm(self, input_shape: tuple[int, ...]) -> float:
        """ρ ≥ ‖L_A‖ for the kernel in use on inputs of `input_shape` (C, H, W): the exact
        norm of the circular convolution embedding the zero-padded one, in float64."""
        size = folded_size((int(input_shape[-2]), int(input_shape[-1])), self.stride)
        k = self.kernel_size
        return conv2d_operator_norm(self.kernel_in_use(), size, padding=(k - 1, k - 1))

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """Bound on the norm of the eval-mode map on inputs of `input_shape` (C, H, W): the
        truncated exponential of a skew operator of norm ≤ ρ (`truncated_exp_bound`); for a
        kernel that were not exactly skew, Σ ρ^k/k!."""
        kernel = self.kernel_in_use().double()
        rho = self.series_norm(input_shape)
        if torch.equal(kernel, -transpose_kernel(kernel)):
            return truncated_exp_bound(rho, self.eval_terms)
        return exp_series_bound(rho, self.eval_terms)

    def vanilla_export(self, input_shape: tuple[int, ...]) -> nn.Sequential:
        """The eval-mode map as plain layers: zero padding and space-to-depth for a stride, then
        `eval_terms` convolutions on the pair (partial sum z, last term t) stacked as 2n
        channels, each (z, t) ↦ (z + L t/k, L t/k), the last one returning z (and the bias)."""
        kernel = self.kernel_in_use()
        n, k, p = self.channels, self.kernel_size, self.kernel_size // 2
        c_in = self.in_channels * self.stride**2
        size = (int(input_shape[-2]), int(input_shape[-1]))
        layers = fold_layers(size, self.stride)
        eye = torch.eye(n, dtype=kernel.dtype)
        dirac = torch.zeros_like(kernel)
        dirac[:, :, p, p] = eye
        start = nn.Conv2d(c_in, 2 * n, 1, bias=False)  # x ↦ (x, x), channels padded with zeros
        start.weight.data.copy_(torch.cat([eye, eye])[:, :c_in, None, None])
        layers.append(start)
        for j in range(1, self.eval_terms):
            last = j == self.eval_terms - 1
            step = nn.Conv2d(2 * n, n if last else 2 * n, k, padding=p, bias=False)
            z_row = torch.cat([dirac, kernel / j], dim=1)
            t_row = torch.cat([torch.zeros_like(kernel), kernel / j], dim=1)
            step.weight.data.copy_(z_row if last else torch.cat([z_row, t_row]))
            layers.append(step)
        end = nn.Conv2d(n if self.eval_terms > 1 else 2 * n, self.out_channels, 1)
        end.weight.data.copy_(torch.eye(end.in_channels)[: self.out_channels, :, None, None])
        if self.bias is not None:
            end.bias.data.copy_(self.bias.detach())
        else:
            end.bias = None
        layers.append(end)
        return nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, terms={self.terms}, eval_terms={self.eval_terms}, "
            f"bias={self.bias is not None}"
        )


def soc_conv(
    c_in: int,
    c_out: int,
    kernel_size: int = 3,
    stride: int = 1,
    input_size: tuple[int, int] = (1, 1),
    *,
    terms: int = 6,
    eval_terms: int = 13,
) -> nn.Module:
    """The family's convolution, `same` output size ceil(n / stride): `SOCConv2d` for an odd
    kernel; a kernel equal to the stride (a 1×1 map, or a 2×2 stride-2 downsampling) is a dense
    map after space-to-depth, a standard `nn.Conv2d` with the exact exponential `SkewExp`."""
    check_geometry(kernel_size, stride, c_in, c_out)
    if kernel_size != stride:
        return SOCConv2d(c_in, c_out, kernel_size, stride, terms=terms, eval_terms=eval_terms)
    return dense_conv(c_in, c_out, stride, input_size, _skew_exp_parametrize)


def dense_conv(
    c_in: int,
    c_out: int,
    stride: int,
    input_size: tuple[int, int],
    constrain: Callable[[nn.Module], nn.Module],
) -> nn.Module:
    """A stride × stride convolution of stride `stride` (a dense map after space-to-depth),
    constrained by `constrain`; odd sizes are zero-padded at the bottom and right first."""
    layer = constrain(nn.Conv2d(c_in, c_out, stride, stride=stride))
    nn.init.zeros_(layer.bias)
    padding = folded_padding(tuple(input_size), stride)
    return nn.Sequential(nn.ZeroPad2d(padding), layer) if any(padding) else layer


families.register(
    families.LayerFamily(
        name="soc",
        summary="skew-orthogonal convolutions (Singla & Feizi 2021), exact exponential dense",
        conv=lambda c_in, c_out, k, s, size, soc_terms=6, soc_eval_terms=13: soc_conv(
            c_in, c_out, k, s, size, terms=soc_terms, eval_terms=soc_eval_terms
        ),
        linear=lambda fan_in, fan_out, bias, soc_terms=6, soc_eval_terms=13: soc_linear(
            fan_in, fan_out, bias
        ),
        options={"soc_terms": 6, "soc_eval_terms": 13},
    )
)
