"""A bound on the rounding error of a model's forward pass, so that certificates hold for the
logits the model computes in floating point, not for exact arithmetic.

Near a decision boundary two adjacent float32 inputs can change class while the exact margin
says they cannot. `forward_error` bounds ‖f̂(x) − f(x)‖₂ ≤ offset + slope·‖x‖₂ for every input
x, where f̂ is the forward pass as computed and f the exact map whose Lipschitz bound
`tradeoff.bounds` computes. Each leaf adds at most α·‖its input‖ + β of its own:

- a sum of n products (a dense layer, a convolution, a pool) is off by at most
  γ_n·Σ|w_i||x_i|, γ_n = nu/(1 − nu), whatever the order of summation (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 3.1), so a layer's error is at most γ_n·‖|W|‖·‖x‖, with
  |W| the layer's weights in absolute value; where float32 products may round their inputs to
  TF32 or bfloat16 (torch's float32 precision settings), each product adds 2·u_in + u_in²;
- elementwise functions (tanh, softsign, sigmoid) are taken to be within 8u of their value
  (twice the 2 ulp the CUDA and SLEEF implementations promise); sorting, max, ReLU and
  padding are exact;
- a Fourier transform of length N = Π r (the FFT libraries run one radix-r pass per prime
  factor r ≤ 11; LOT's grids have r ≤ 5, the Cayley and sandwich layers' the input's own) is
  taken to be within Σ_r 2·(3r^1.5 + 6)·u of its value, relative, in the 2-norm: twice the
  bound of one radix-r pass (a butterfly of r complex products, √2·γ_2r·√r, and its twiddle
  factors), as for the elementwise functions.

The leaves after a leaf pass its error on at most their Lipschitz bound, and the input of
each leaf is at most its exact zero-input output plus the Lipschitz bound of the leaves before
it times ‖x‖, plus the error so far. Convolutions are assumed computed as sums of products
(direct, im2col or implicit GEMM); transform-based algorithms (Winograd, FFT), which cuDNN may
pick on CUDA, round differently and are not covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .bounds import (
    LINEAR_CLASSES,
    NotLipschitzError,
    class_of,
    eval_mode,
    leaf_bound,
    leaves,
    padding_copies,
    resolve_input_shape,
)
from .export import Residual
from .nn import activations, conv, cpl, lot, pooling, residual, soc
from .nn.operator_norm import REL_SLACK, spectral_norm

__all__ = ["ForwardError", "PrecisionError", "arithmetic", "forward_error", "unit_roundoff"]


class PrecisionError(ValueError):
    """Logits computed in a precision whose rounding the certificates do not bound."""


@dataclass(frozen=True)
class ForwardError:
    """‖f̂(x) − f(x)‖₂ ≤ offset + slope·‖x‖₂ for the computed f̂ and the exact f, every x.

    `dtype` and `device` are the arithmetic it holds for; `bounds` the Lipschitz bound of each
    leaf the forward pass applies, in order, at the shape it sees there, and `lipschitz` their
    product, the bound of the exact map.
    """

    offset: float
    slope: float
    lipschitz: float
    bounds: tuple[float, ...]
    dtype: torch.dtype
    device: torch.device


_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
_REDUCED = {"tf32": 2.0**-11, "bf16": 2.0**-8}
_MATMUL_PRECISION = {"high": "tf32", "medium": "bf16"}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u of `dtype`: a rounded result is within a factor (1 ± u) of the exact one."""
    if dtype not in _ROUNDOFF:
        raise PrecisionError(
            f"tradeoff.certificates: logits computed in {dtype} are not certified (their "
            "rounding is not bounded); certify and deploy the model in float32 (model.float(), "
            "outside autocast)"
        )
    return _ROUNDOFF[dtype]


def arithmetic(
    model: nn.Module, inputs: torch.Tensor | None = None
) -> tuple[torch.dtype, torch.device]:
    """The dtype and device `model` computes in; `PrecisionError` for float16, bfloat16 and
    autocast, whose rounding is not bounded, and for devices other than CPU and CUDA."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if inputs is not None:
        params.append(inputs)
    device = params[0].device if params else torch.device("cpu")
    dtypes = {p.dtype for p in params} or {torch.get_default_dtype()}
    for dtype in dtypes:
        unit_roundoff(dtype)
    if device.type not in ("cpu", "cuda"):
        raise PrecisionError(
            f"tradeoff.certificates: the rounding of device {device.type!r} is not modelled; "
            "certify on cpu or cuda"
        )
    if torch.is_autocast_enabled(device.type):
        raise PrecisionError(
            f"tradeoff.certificates: autocast is on for {device.type}, so the logits are "
            f"computed in {torch.get_autocast_dtype(device.type)}, whose rounding is not "
            "bounded; certify (and deploy) the model in float32, outside autocast"
        )
    return max(dtypes, key=unit_roundoff), device


def _product_roundoff(dtype: torch.dtype, device: torch.device, kind: str) -> float:
    """Unit roundoff of the inputs of one product in a `kind` ("conv" or "matmul") kernel."""
    u = unit_roundoff(dtype)
    if dtype != torch.float32:
        return u
    backends = torch.backends
    modes = {_MATMUL_PRECISION.get(torch.get_float32_matmul_precision(), "ieee")}
    if device.type == "cuda":
        if kind == "conv":
            modes.add("tf32" if backends.cudnn.allow_tf32 else "ieee")
            found = [backends.cudnn, getattr(backends.cudnn, "conv", None)]
        else:
            modes.add("tf32" if backends.cuda.matmul.allow_tf32 else "ieee")
            found = [backends.cuda.matmul]
    else:
        found = [backends.mkldnn, getattr(backends.mkldnn, kind, None)]
    modes |= {getattr(b, "fp32_precision", "none") for b in (backends, *found) if b is not None}
    return max([u, *(_REDUCED[m] for m in modes if m in _REDUCED)])


def _gamma(n: int, u: float) -> float:
    if n * u >= 0.5:
        raise PrecisionError(
            f"tradeoff.certificates: sums of {n} terms at unit roundoff {u:.3g} have no useful "
            "rounding bound; certify in float64"
        )
    return n * u / (1 - n * u)


def _dot(n: int, dtype: torch.dtype, device: torch.device, kind: str) -> float:
    """c with |computed − exact| ≤ c·Σ|w_i||x_i| for a sum of n products (a bias counts one)."""
    u, u_in = unit_roundoff(dtype), _product_roundoff(dtype, device, kind)
    inputs = 0.0 if u_in == u else 2 * u_in + u_in * u_in
    return (1 + inputs) * (1 + _gamma(n, u)) - 1


def _abs_taps(weight: torch.Tensor, groups: int = 1) -> float:
    """‖conv with |K|‖ ≤ ‖Σ_taps |K_tap|‖₂: a non-negative kernel peaks at frequency zero."""
    taps = weight.detach().to(torch.float64).abs().sum(dim=(2, 3))
    return max(spectral_norm(g) for g in taps.chunk(groups, dim=0))


def _bias_norm(layer: nn.Module, out: torch.Tensor, channels: int) -> float:
    if getattr(layer, "bias", None) is None:
        return 0.0
    positions = out[0].numel() // channels
    return float(layer.bias.detach().double().norm()) * math.sqrt(positions)


# Leaves whose arithmetic is exact: sorting, max, clamps, copies.
_EXACT = (
    nn.ReLU,
    nn.Identity,
    nn.Flatten,
    nn.Hardtanh,
    nn.ReLU6,
    nn.ZeroPad2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.MaxPool2d,
    activations.Abs,
    activations.GroupSort,
    activations.GroupSort2,
    activations.FullSort,
    activations.MaxMin,
    pooling.InvertibleDownsampling,
)
_ELEMENTWISE = 8  # relative error of tanh, softsign and sigmoid, in units of u


def _leaf_error(
    leaf: nn.Module, name: str, x: torch.Tensor, out: torch.Tensor, lip: float
) -> tuple[float, float]:
    """(α, β): the leaf's own rounding is at most α·‖input‖ + β, for any input."""
    dtype, device = out.dtype, out.device
    u, cls, numel = unit_roundoff(dtype), class_of(leaf), x[0].numel()
    if cls in _EXACT:
        return 0.0, 0.0
    if cls in LINEAR_CLASSES:
        c = _dot(leaf.in_features + 1, dtype, device, "matmul")
        w = leaf.weight.detach().to(torch.float64).abs()
        return c * spectral_norm(w), c * _bias_norm(leaf, out, leaf.out_features)
    if cls in (nn.Conv2d, conv.LipschitzConv2d, conv.SpectralConv2d, conv.AOLConv2d):
        kh, kw = leaf.kernel_size
        c = _dot(leaf.in_channels // leaf.groups * kh * kw + 1, dtype, device, "conv")
        copies = padding_copies(leaf, tuple(x.shape[-2:]))
        alpha = c * _abs_taps(leaf.weight, leaf.groups) * math.sqrt(copies)
        return alpha, c * _bias_norm(leaf, out, leaf.out_channels)
    if cls is nn.ConvTranspose2d:
        kh, kw = leaf.kernel_size
        c = _dot(leaf.in_channels * kh * kw + 1, dtype, device, "conv")
        return c * _abs_taps(leaf.weight), c * _bias_norm(leaf, out, leaf.out_channels)
    if cls in (nn.Tanh, nn.Softsign):  # |f(x)| ≤ |x|
        return _ELEMENTWISE * u, 0.0
    if cls is nn.Sigmoid:  # |σ(x)| ≤ 1/2 + |x|/4
        return _ELEMENTWISE * u / 4, _ELEMENTWISE * u * math.sqrt(numel) / 2
    if cls is nn.LeakyReLU:  # the slope is rounded to the dtype, then the product
        return 3 * u * abs(leaf.negative_slope), 0.0
    if cls is activations.Householder:
        # The selector and the reflection each take a few products of cos/sin: a wrong side
        # near the mirror costs twice the selector's error, a reflection its own rounding.
        return 64 * u, 0.0
    if cls in (nn.AvgPool2d, pooling.ScaledAvgPool2d, pooling.ScaledL2NormPool2d):
        kh, kw = pooling._pair(leaf.kernel_size)
        g = _gamma(kh * kw + 4, u)  # the window's sum, the division, the scale, the sqrt
        eps = getattr(leaf, "eps", 0.0)  # the L2-norm pool outputs at least eps per window
        return g * lip, g * eps * math.sqrt(out[0].numel())
    if cls is pooling.ScaledGlobalAvgPool2d:
        return _gamma(x.shape[-2] * x.shape[-1] + 3, u) * lip, 0.0
    if cls in (residual.SLLLinear, residual.SLLConv2d, cpl.CPLLinear, cpl.CPLConv2d):
        return _sll_error(leaf, x, out)
    if cls is soc.SOCConv2d:
        return _soc_error(leaf, x, out)
    if cls is lot.LOTConv2d:
        return _lot_error(leaf, x, out)
    if cls is Residual:
        return _residual_error(leaf, x)
    own = getattr(leaf, "forward_error", None)
    if callable(own):
        slope, offset = own(tuple(x.shape[1:]), u)
        return float(slope), float(offset)
    raise NotLipschitzError(
        f"tradeoff.rounding: layer {name!r} ({type(leaf).__name__}) bounds its Lipschitz "
        "constant but not its rounding error; give its class a `forward_error(input_shape, "
        "unit_roundoff)` method returning (slope, offset) with ‖computed − exact‖ ≤ "
        "slope·‖x‖ + offset, to certify it"
    )


def _sll_error(
    layer: residual.SLLLinear | residual.SLLConv2d | cpl.CPLLinear | cpl.CPLConv2d,
    x: torch.Tensor,
    out: torch.Tensor,
) -> tuple[float, float]:
    # h = x − 2·Wᵀ(t ⊙ relu(Wx + b)) with n + m products on any term's path (m inner units),
    # a product by t and a subtraction: the error is γ·(|x| + 2|Wᵀ| t (|W||x| + |b|)). A CPL
    # layer, x − 2t·Wᵀrelu(Wx + b), has the same form with t its step over 2 for every unit.
    dtype, device = out.dtype, out.device
    w = layer.weight.detach()
    if w.ndim == 4:
        taps = layer.kernel_size**2
        n, m = layer.channels * taps, layer.inner_channels * taps
        a, kind = _abs_taps(w), "conv"
    else:
        n, m = layer.features, layer.inner_features
        a, kind = spectral_norm(w.to(torch.float64).abs()), "matmul"
    with torch.no_grad():
        tau = float(layer.scaling().abs().max())
    bias = float(layer.bias.detach().double().norm()) * math.sqrt(out[0].numel() // w.shape[1])
    c = (1 + _dot(n + 1, dtype, device, kind)) * (1 + _dot(m + 3, dtype, device, kind)) - 1
    return c * (1 + 2 * a * a * tau), c * 2 * a * tau * bias


def _soc_error(layer: soc.SOCConv2d, x: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    # Term k is t_k = fl(fl(L t_{k−1}) / k): its error is the previous one carried by L/k plus
    # its own product and division rounding; each partial sum adds u of itself. Per unit ‖x‖:
    # e the term's error, t its exact size (ρ^k/k!), s the sum's error, p its exact size.
    dtype, device = out.dtype, out.device
    u = unit_roundoff(dtype)
    kernel = layer.kernel_in_use()
    rho = layer.series_norm(tuple(x.shape[1:]))
    c = _dot(kernel.shape[1] * layer.kernel_size**2, dtype, device, "conv")
    eta = c * _abs_taps(kernel) * (1 + u) + u * rho
    e = t = s = 0.0
    t = p = 1.0
    for k in range(1, layer.eval_terms):
        e = (rho * e + eta * (t + e)) / k
        t = t * rho / k
        p += t
        s = s + e + u * (p + s + e)
    if layer.bias is None:
        return s * (1 + REL_SLACK), 0.0
    return (s + u * (p + s)) * (1 + REL_SLACK), u * _bias_norm(layer, out, layer.out_channels)


def fft_error(grid: tuple[int, ...], u: float) -> float:
    """ε with ‖fl(FFT(x)) − FFT(x)‖ ≤ ε‖FFT(x)‖ (2-norm) for a real FFT or its inverse over
    axes of `grid` at unit roundoff u: the module docstring's model, one radix-r pass per prime
    factor r of each axis (pocketfft, MKL and cuFFT have passes for r ≤ 11), one radix-2 pass
    more per axis for the real-to-complex step, and u for the inverse's 1/N. Longer prime
    factors (Bluestein's algorithm) raise PrecisionError."""
    total = 1.0
    for n in grid:
        passes, m, r = [2], int(n), 2
        while m > 1:
            while m % r == 0:
                passes.append(r)
                m //= r
            r += 1
        if max(passes) > 11:
            raise PrecisionError(
                f"tradeoff.rounding: an FFT of length {n} (prime factor {max(passes)} > 11) is "
                "not modelled; use input sizes whose prime factors are at most 11"
            )
        total *= 1 + 2 * u * sum(3 * p**1.5 + 6 for p in passes)
    return total - 1 + u


def _lot_error(layer: lot.LOTConv2d, x: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    # rfft2 (error f·‖X‖), the products by the frequency matrices M (complex sums of `in` terms:
    # 2·in real products per component, √2 for the modulus, at most ‖M‖_F·‖X‖ in all), irfft2
    # (f of its input), then the bias. Parseval's weights make every norm one of ‖x‖'s scale.
    dtype, device = out.dtype, out.device
    u = unit_roundoff(dtype)
    spectrum = layer.spectrum_in_use(tuple(x.shape[1:]))
    m = spectral_norm(spectrum)
    frobenius = float(torch.linalg.matrix_norm(spectrum.to(torch.complex128)).max())
    size = soc.folded_size(tuple(x.shape[-2:]), layer.stride)
    f = fft_error(layer.grid(size), u)
    c = math.sqrt(2) * _dot(2 * spectrum.shape[-1], dtype, device, "matmul")
    product = m * f + c * frobenius * (1 + f)
    computed = m + product
    slope = product + f * computed
    slope = (slope + u * (computed + slope)) * (1 + REL_SLACK)
    return slope, u * _bias_norm(layer, out, layer.out_channels)


def _residual_error(layer: Residual, x: torch.Tensor) -> tuple[float, float]:
    # x + g(x): g's own error, plus one rounding of the sum, |x + g(x)| ≤ (1 + K_g)|x| + |g(0)|
    u = unit_roundoff(x.dtype)
    offset, slope, bounds, zero = _chain(list(leaves(layer.branch)), torch.zeros_like(x))
    lip = math.prod(bounds)
    return (1 + u) * slope + u * (1 + lip), (1 + u) * offset + u * zero


def _chain(
    named: list[tuple[str, nn.Module]], x: torch.Tensor
) -> tuple[float, float, list[float], float]:
    """(offset, slope, the leaves' Lipschitz bounds, bound on ‖exact output at 0‖) of the
    composition of `named` leaves, run on the zero input `x`: the module docstring's recursion."""
    offset = slope = zero = 0.0
    lip, bounds = 1.0, []
    for name, leaf in named:
        bound = leaf_bound(leaf, tuple(x.shape[1:]), name)
        bounds.append(bound)
        out = leaf(x)
        alpha, beta = _leaf_error(leaf, name, x, out, bound)
        offset = (bound + alpha) * offset + alpha * zero + beta
        slope = (bound + alpha) * slope + alpha * lip
        lip *= bound
        zero = float(out.detach().double().norm()) * (1 + REL_SLACK) + offset
        x = out
    return offset * (1 + REL_SLACK), slope * (1 + REL_SLACK), bounds, zero


def forward_error(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> ForwardError:
    """Bound on the rounding of `model`'s forward pass (eval mode) on inputs of `input_shape`
    (default `model.input_shape`), in the dtype, device and float32 precision settings it runs
    with now."""
    input_shape = resolve_input_shape(model, input_shape)
    dtype, device = arithmetic(model)
    with torch.no_grad(), eval_mode(model):
        x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
        offset, slope, bounds, _ = _chain(list(leaves(model)), x)
    return ForwardError(offset, slope, math.prod(bounds), tuple(bounds), dtype, device)
