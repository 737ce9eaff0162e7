"""SDP-based Lipschitz residual layers (SLL, Araujo et al., ICLR 2023).

h(x) = x − 2 W T⁻¹ σ(Wᵀx + b) with σ = ReLU and T = diag(t), t_i = Σ_j |WᵀW|_ij q_j / q_i
(q > 0 learnt). The theorem of the paper makes h 1-Lipschitz for every W, b and q. For the
convolutional layer, WᵀW is the Gram operator of the convolution, taken as the kernel's
self-correlation over all shifts (zero padding only removes terms).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import full_precision

__all__ = ["Residual", "SLLConv2d", "SLLLinear"]


class Residual(nn.Module):
    """x + branch(x): the exported form of a residual layer (SLL, CPL)."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """1 + Lip(branch): sound for any branch, looser than the SLL theorem's 1."""
        from ..bounds import lipschitz_bound  # the bounds walk imports this module

        return 1.0 + lipschitz_bound(self.branch, input_shape)


def residual_export(
    weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, padding: int | None
) -> Residual:
    """The plain form of a residual layer x − Wᵀ(scale ⊙ relu(Wx + b)): x + up(relu(down(x)))
    with `nn.Linear` layers (`padding` None) or an `nn.Conv2d` and its `nn.ConvTranspose2d`."""
    inner, features = weight.shape[:2]
    if padding is None:
        down = nn.Linear(features, inner)
        up = nn.Linear(inner, features, bias=False)
        folded = -(weight * scale.view(-1, 1)).t()
    else:
        k = weight.shape[-1]
        down = nn.Conv2d(features, inner, k, padding=padding)
        up = nn.ConvTranspose2d(inner, features, k, padding=padding, bias=False)
        folded = -weight * scale.view(-1, 1, 1, 1)
    with torch.no_grad():
        down.weight.copy_(weight)
        down.bias.copy_(bias)
        up.weight.copy_(folded)
    return Residual(nn.Sequential(down, nn.ReLU(), up))


def residual_parameters(
    inner: int, features: int, kernel_size: int | None = None
) -> tuple[nn.Parameter, nn.Parameter]:
    """The weight W (inner, features[, k, k]) and bias b of a residual layer
    x − Wᵀ(s ⊙ σ(Wx + b)) (SLL, CPL): W Xavier-normal, b uniform in ±1/√fan_in."""
    shape = (
        (inner, features) if kernel_size is None else (inner, features, kernel_size, kernel_size)
    )
    weight, bias = nn.Parameter(torch.empty(shape)), nn.Parameter(torch.empty(inner))
    nn.init.xavier_normal_(weight)
    bound = 1 / math.sqrt(features * (kernel_size or 1) ** 2)
    nn.init.uniform_(bias, -bound, bound)
    return weight, bias


def _safe_inv(t: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / t
    return torch.where(torch.isfinite(inv), inv, torch.zeros_like(inv))


class _SLL(nn.Module):
    """Shared parts: T from the Gram of the weight, and the bound check in float64."""

    weight: nn.Parameter
    log_q: nn.Parameter

    def _gram_abs(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scaling(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The diagonal T⁻¹ of the layer (one value per inner unit), in the weight's dtype even
        under autocast: a rounded-down T would break the layer's bound."""
        weight = self.weight if weight is None else weight
        with full_precision(weight.device.type):
            log_q = self.log_q.to(weight.dtype)
            gram = self._gram_abs(weight)
            dims = tuple(range(1, gram.ndim))
            shape = (1, -1) + (1,) * (gram.ndim - 2)
            t = (torch.exp(log_q).view(shape) * gram).sum(dims) * torch.exp(-log_q)
            return _safe_inv(t)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """1 + 2δ, δ the relative excess of the float32 T⁻¹ over its exact (float64) value.

        With T_used ⪯ (1+δ) T_exact, ‖h_used − h_exact‖_Lip ≤ 2δ ‖W T_exact^(-1/2)‖² ≤ 2δ.
        """
        with torch.no_grad():
            used = self.scaling().double()
            exact = self.scaling(self.weight.double())
            ratio = torch.where(exact > 0, used / exact, torch.where(used > 0, math.inf, 1.0))
            delta = max(float(ratio.max()) - 1.0, 0.0)
        return 1.0 + 2.0 * delta


class SLLLinear(_SLL):
    """Dense SLL layer on `features` with `inner_features` hidden units (default: same)."""

    def __init__(self, features: int, inner_features: int | None = None) -> None:
        super().__init__()
        inner = inner_features or features
        self.features, self.inner_features = features, inner
        self.weight, self.bias = residual_parameters(inner, features)
        self.log_q = nn.Parameter(torch.zeros(inner))

    def _gram_abs(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight @ weight.t()).abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.scaling()
        res = F.relu(F.linear(x, self.weight, self.bias)) * t
        return x - 2 * F.linear(res, self.weight.t())

    def extra_repr(self) -> str:
        return f"features={self.features}, inner_features={self.inner_features}"

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> Residual:
        """The same map as plain `nn.Linear` layers around a ReLU, plus the identity."""
        with torch.no_grad():
            return residual_export(self.weight, self.bias, 2 * self.scaling(), None)


class SLLConv2d(_SLL):
    """Convolutional SLL layer on `channels` with `inner_channels` hidden channels, `same` size."""

    def __init__(
        self, channels: int, inner_channels: int | None = None, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size (got {kernel_size})")
        inner = inner_channels or channels
        self.channels, self.inner_channels, self.kernel_size = channels, inner, kernel_size
        self.weight, self.bias = residual_parameters(inner, channels, kernel_size)
        self.log_q = nn.Parameter(torch.zeros(inner))

    def _gram_abs(self, weight: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.conv2d(weight, weight, padding=k - 1).abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size // 2
        t = self.scaling().view(1, -1, 1, 1)
        res = F.relu(F.conv2d(x, self.weight, self.bias, padding=p)) * t
        return x - 2 * F.conv_transpose2d(res, self.weight, padding=p)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inner_channels={self.inner_channels}, "
            f"kernel_size={self.kernel_size}"
        )

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> Residual:
        """The same map as a plain `nn.Conv2d`, a ReLU and an `nn.ConvTranspose2d`, plus x."""
        with torch.no_grad():
            return residual_export(
                self.weight, self.bias, 2 * self.scaling(), self.kernel_size // 2
            )
