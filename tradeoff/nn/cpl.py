"""Convex potential layers (Meunier, Delattre, Araujo & Allauzen, ICML 2022).

h(x) = x − t·Wᵀσ(Wx + b), σ = ReLU, is a gradient step on the convex potential
ψ(x) = Σ_i ρ(w_iᵀx + b_i) (ρ' = ReLU): its Jacobian is I − t·WᵀDW with D diagonal in [0, 1],
whose eigenvalues lie in [1 − t‖W‖², 1], so h is max(1, t‖W‖² − 1)-Lipschitz: 1 for any step
t ≤ 2/‖W‖². The paper's step is 2/‖W‖² with ‖W‖ from power iteration, an estimate that can
lie below the norm. Here the training step uses that estimate (one iteration per step on a
persistent vector, as the paper), and eval mode uses 2/S² with S a certified upper bound of
‖W‖ computed in float64 (`tradeoff.nn.operator_norm`: the exact spectral norm of a dense
weight; for a convolution the exact norm of its circular embedding, which bounds the
zero-padded operator on the input's grid), times 1 + REL_SLACK. `lipschitz_bound` recomputes
that bound and reports max(1, t·S² − 1) for the step t in use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import families
from .operator_norm import REL_SLACK, conv2d_operator_norm, spectral_norm
from .residual import Residual, residual_export, residual_parameters

__all__ = ["CPLConv2d", "CPLLinear"]


class _CPL(nn.Module):
    """Shared parts: the step (estimated in training, certified in eval) and the bound."""

    weight: nn.Parameter
    bias: nn.Parameter
    u: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._certified: tuple[torch.Tensor, float] | None = None

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _up(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def certified_norm(self) -> float:
        """An upper bound of ‖W‖ computed in float64 (see the module docstring)."""
        raise NotImplementedError

    def _padding(self) -> int | None:
        return None

    def _estimate(self) -> torch.Tensor:
        """‖W u‖ after one power-iteration step on the persistent unit vector u: differentiable
        in W, at most ‖W‖ (used only for training)."""
        with torch.no_grad():
            v = self._up(self._down_linear(self.u))
            self.u.copy_(v / v.norm().clamp_min(1e-12))
        return self._down_linear(self.u).norm()

    def _down_linear(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _step(self) -> torch.Tensor:
        """The step t of h(x) = x − t·Wᵀσ(Wx + b), a 0-d tensor in the weight's dtype."""
        if self.training:
            return 2 / self._estimate().square().clamp_min(1e-12)
        key = self.weight.detach()
        cached = self._certified
        if cached is None or cached[0].dtype != key.dtype or not torch.equal(cached[0], key):
            self._certified = (key.clone(), self.certified_norm() * (1 + REL_SLACK))
        norm = self._certified[1]
        return torch.tensor(2 / norm**2 if norm > 0 else 0.0, dtype=key.dtype, device=key.device)

    def scaling(self) -> torch.Tensor:
        """t/2 for every inner unit: the layer is x − 2·Wᵀ(scaling ⊙ σ(Wx + b)), the form of
        SLL's layers (`tradeoff.rounding` bounds both alike)."""
        return (self._step() / 2).expand(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x − 2·Wᵀ((t/2)·σ(Wx + b)), SLL's order of operations, which tradeoff.rounding models
        half = self._step() / 2
        return x - 2 * self._up(F.relu(self._down(x)) * half)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """max(1, t·S² − 1) for the eval-mode step t and S ≥ ‖W‖ (`certified_norm`)."""
        with torch.no_grad():
            was = self.training
            self.eval()
            try:
                t = float(self._step())
            finally:
                self.train(was)
            norm = self.certified_norm()
        return max(1.0, t * norm * norm * (1 + REL_SLACK) - 1.0)

    def vanilla_export(self, input_shape: tuple[int, ...] | None = None) -> Residual:
        """The same map as plain layers: x + up(relu(down(x))), up carrying −t·Wᵀ."""
        with torch.no_grad():
            scale = 2 * self.scaling()
            return residual_export(self.weight.detach(), self.bias.detach(), scale, self._padding())


class CPLLinear(_CPL):
    """Dense convex potential layer on `features` with `inner_features` units (default same)."""

    def __init__(self, features: int, inner_features: int | None = None) -> None:
        super().__init__()
        inner = inner_features or features
        self.features, self.inner_features = features, inner
        self.weight, self.bias = residual_parameters(inner, features)
        u = torch.randn(1, features)
        self.register_buffer("u", u / u.norm())

    def _down_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _up(self, y: torch.Tensor) -> torch.Tensor:
        return F.linear(y, self.weight.t())

    def certified_norm(self) -> float:
        return spectral_norm(self.weight.detach())

    def extra_repr(self) -> str:
        return f"features={self.features}, inner_features={self.inner_features}"


class CPLConv2d(_CPL):
    """Convolutional convex potential layer on `channels` (`inner_channels` hidden), odd
    `kernel_size`, zero padding that keeps the size, for inputs of `input_size` (the grid its
    certified norm is computed on)."""

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        kernel_size: int = 3,
        *,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size (got {kernel_size})")
        inner = inner_channels or channels
        self.channels, self.inner_channels, self.kernel_size = channels, inner, kernel_size
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.weight, self.bias = residual_parameters(inner, channels, kernel_size)
        u = torch.randn(1, channels, *self.input_size)
        self.register_buffer("u", u / u.norm())

    def _padding(self) -> int:
        return self.kernel_size // 2

    def _down_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=self._padding())

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"CPLConv2d was built for {self.input_size} inputs (its step is certified on "
                f"that grid), got {tuple(x.shape[-2:])}; build it with that input_size"
            )
        return F.conv2d(x, self.weight, self.bias, padding=self._padding())

    def _up(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, self.weight, padding=self._padding())

    def certified_norm(self) -> float:
        pad = self.kernel_size - 1
        return conv2d_operator_norm(self.weight.detach(), self.input_size, padding=(pad, pad))

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        if tuple(input_shape[-2:]) != self.input_size:
            raise ValueError(
                f"CPLConv2d is bounded on its own {self.input_size} grid, not on inputs of "
                f"shape {tuple(input_shape)}"
            )
        return super().lipschitz_bound(input_shape)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inner_channels={self.inner_channels}, "
            f"kernel_size={self.kernel_size}, input_size={self.input_size}"
        )


families.register(
    families.LayerFamily(
        name="cpl",
        summary="convex potential layers (Meunier et al. 2022), in an AOL frame",
        block=lambda c_in, c_out, k, size: CPLConv2d(c_in, kernel_size=k, input_size=size),
        dense_block=lambda fan_in, fan_out: CPLLinear(fan_in),
        frame="aol",
    )
)
