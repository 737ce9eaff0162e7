"""Sandwich layers (Wang & Manchester, ICML 2023): h(x) = √2·AᵀΨσ(√2·Ψ⁻¹Bx + b), σ = ReLU.

[A B] is the Cayley transform of a free matrix (orthonormal rows, AAᵀ + BBᵀ = I) and
Ψ = diag(e^ψ) a learnt scaling; the layer carries its own ReLU. The convolution does the same
per frequency of its input's grid, in the Fourier domain with circular padding
(`tradeoff.nn.cayley`), ReLU and Ψ in the spatial domain.

Bound of what is computed. With g = fl(√2·e^−ψ) and h = fl(√2·e^ψ) the coefficients in use,
the Jacobian is AᵀDB with D = diag(h⊙d⊙g), d ∈ [0, 1] the ReLU's slopes, so
D = (m/2)·2D', D' ∈ [0, 1], m = max(h⊙g) (2 up to rounding). For any A, B (rows of [A B] not
exactly orthonormal in float), with λ = max(0, λ_max(AAᵀ + BBᵀ − I)):
‖Δy‖² = 2ΔzᵀAAᵀΔz ≤ 2ΔzᵀΔv − 2‖BᵀΔz‖² + 2λ‖Δz‖² ≤ ‖Δx‖² + 4λ‖B‖²‖Δx‖² for Δz = D'Δv,
Δv = √2BΔx (ΔzᵀΔv ≥ ‖Δz‖² as D' ∈ [0, 1]), so h is (m/2)·√(1 + 4λ‖B‖²)-Lipschitz, with A, B
the blocks of the map in use (`cayley.hermitian_blocks` for the convolution), in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import families
from .cayley import (
    FourierConv2d,
    apply_blocks,
    cayley,
    fourier_stage_error,
    hermitian_blocks,
)
from .operator_norm import REL_SLACK, block_norms, spectral_norm

__all__ = ["SandwichConv2d", "SandwichLinear", "sandwich_bound"]

_SQRT2 = math.sqrt(2.0)


def sandwich_bound(q: torch.Tensor, out_features: int, coef: torch.Tensor) -> float:
    """(m/2)·√(1 + 4λ‖B‖²) (module docstring) for blocks q = [A B] (…, out, out + in) of the
    map in use and the products `coef` = h⊙g of its two scalings, in float64."""
    q = q.detach().to(torch.complex128 if q.is_complex() else torch.float64)
    b = q[..., out_features:]
    gram = q @ q.mH - torch.eye(out_features, dtype=q.dtype)
    excess = float(torch.linalg.eigvalsh(gram)[..., -1].max().clamp_min(0))
    b_norm = float(block_norms(b.reshape(-1, *b.shape[-2:])).max())
    m = float(coef.detach().double().max())
    return m / 2 * math.sqrt(1 + 4 * excess * b_norm**2) * (1 + REL_SLACK)


def sandwich_error(
    down: tuple[float, float], up: tuple[float, float], scalings, bias: float, u: float
) -> tuple[float, float]:
    """(slope, offset) of the rounding of y = up(h ⊙ relu(g ⊙ down(x) + b)) given each linear
    stage's (r, R) (computed within r·‖input‖, norm ≤ R), the scalings (g, h) and ‖b‖ over
    all positions: errors pass on through the later stages' bounds, each product and sum
    adds u of what it computes."""
    (r_down, big_down), (r_up, big_up) = down, up
    g, h = (float(s.detach().double().abs().max()) for s in scalings)
    # ‖z‖ ≤ zs·‖x‖ + zo and its error ≤ es·‖x‖ + eo (z = relu(g ⊙ down(x) + b))
    zs, zo = g * (big_down + r_down) * (1 + u) ** 2, bias * (1 + u) ** 2
    es, eo = g * (r_down + 2 * u * (big_down + r_down)) * (1 + u), 2 * u * bias
    grow = (1 + u) * (1 + r_up / big_up) - 1 if big_up > 0 else 0.0
    return big_up * h * (es + grow * zs), big_up * h * (eo + grow * zo)


class _Scalings(nn.Module):
    """The free ψ and the two scalings g = √2·e^−ψ, h = √2·e^ψ the layer multiplies by."""

    psi: nn.Parameter

    def scalings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _SQRT2 * torch.exp(-self.psi), _SQRT2 * torch.exp(self.psi)

    def _coef(self) -> torch.Tensor:
        with torch.no_grad():
            g, h = self.scalings()
            return g.double() * h.double()


class SandwichLinear(_Scalings):
    """Dense sandwich layer from `in_features` to `out_features`, ReLU included."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features + out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.alpha = nn.Parameter(self.weight.detach().norm().reshape(()).clone())
        self.psi = nn.Parameter(torch.zeros(out_features))
        bound = 1 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def q(self) -> torch.Tensor:
        """[A B]: the Cayley transform of α·W/‖W‖_F."""
        return cayley(self.alpha.to(self.weight.dtype) * self.weight / self.weight.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q()
        a, b = q[:, : self.out_features], q[:, self.out_features :]
        g, h = self.scalings()
        z = F.relu(F.linear(x, b) * g + self.bias)
        return F.linear(z * h, a.t())

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """(m/2)·√(1 + 4λ‖B‖²) from the float weights in use (module docstring)."""
        with torch.no_grad():
            return sandwich_bound(self.q(), self.out_features, self._coef())

    def forward_error(self, input_shape: tuple[int, ...], u: float) -> tuple[float, float]:
        """(slope, offset) of the rounding of its two products, scalings and bias."""
        from ..rounding import _dot  # the float32 product settings live there

        with torch.no_grad():
            q = self.q().double()
            n = self.out_features
            stages = []
            for part, terms in ((q[:, n:], self.in_features), (q[:, :n].t(), n)):
                big = spectral_norm(part.abs())
                stages.append(
                    (big * _dot(terms, self.weight.dtype, self.weight.device, "matmul"), big)
                )
            bias = float(self.bias.detach().double().norm())
            return sandwich_error(stages[0], stages[1], self.scalings(), bias, u)

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> nn.Sequential:
        """Linear(B·g, b) → ReLU → Linear((h·A)ᵀ): the same map in plain layers."""
        with torch.no_grad():
            q = self.q()
            g, h = self.scalings()
            down = nn.Linear(self.in_features, self.out_features)
            up = nn.Linear(self.out_features, self.out_features, bias=False)
            down.weight.copy_(q[:, self.out_features :] * g[:, None])
            down.bias.copy_(self.bias)
            up.weight.copy_((q[:, : self.out_features] * h[:, None]).t())
        return nn.Sequential(down, nn.ReLU(), up)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


class SandwichConv2d(FourierConv2d, _Scalings):
    """Convolutional sandwich layer (Fourier domain, circular padding, stride 1) from
    `in_channels` to `out_channels` on a fixed `input_size` grid, ReLU included."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        input_size: tuple[int, int] = (8, 8),
    ) -> None:
        kernel_in = in_channels + out_channels
        super().__init__(in_channels, out_channels, kernel_size, input_size, True, kernel_in)
        with torch.no_grad():
            bound = 1 / math.sqrt(in_channels * kernel_size**2)
            self.bias.uniform_(-bound, bound)
        self.psi = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        q = self.blocks().to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
        a, b = q[..., : self.out_channels], q[..., self.out_channels :]
        g, h = (s.view(-1, 1, 1) for s in self.scalings())
        z = F.relu(apply_blocks(b, x) * g + self.bias.view(-1, 1, 1))
        return apply_blocks(a.mH, z * h)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """(m/2)·√(1 + 4λ‖B‖²) over the blocks of the map in use (module docstring)."""
        self._bound_shape(input_shape)
        with torch.no_grad():
            q = hermitian_blocks(self.blocks(), self.input_size)
            return sandwich_bound(q, self.out_channels, self._coef())

    def forward_error(self, input_shape: tuple[int, ...], u: float) -> tuple[float, float]:
        """(slope, offset) of the rounding of its FFTs, products, scalings and bias."""
        with torch.no_grad():
            q, n, size = self.blocks(), self.out_channels, self.input_size
            down = fourier_stage_error(q[..., n:], size, self.weight, u)
            up = fourier_stage_error(q[..., :n].mH, size, self.weight, u)
            bias = float(self.bias.detach().double().norm()) * math.sqrt(size[0] * size[1])
            return sandwich_error(down, up, self.scalings(), bias, u)

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> nn.Sequential:
        """Circular conv (B, scaled by g, bias b) → ReLU → circular conv (Aᴴ, inputs scaled
        by h): the same map in plain `nn.Conv2d` layers."""
        with torch.no_grad():
            q = self.blocks()
            g, h = self.scalings()
            down = self.circular_conv(q[..., self.out_channels :] * g[:, None], self.bias)
            up = self.circular_conv(q[..., : self.out_channels].mH * h, None)
        return nn.Sequential(down, nn.ReLU(), up)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"input_size={self.input_size}"
        )


families.register(
    families.LayerFamily(
        name="sandwich",
        summary="sandwich layers (Wang & Manchester 2023), ReLU included, in a Cayley frame",
        block=lambda c_in, c_out, k, size: SandwichConv2d(c_in, c_out, k, size),
        dense_block=SandwichLinear,
        block_widths="any",
        frame="cayley",
    )
)
