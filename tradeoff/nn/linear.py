"""1-Lipschitz dense layers: `nn.Linear` with a registered weight parametrization."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from .parametrizations import AOLRescale, SpectralBjorck

__all__ = ["AOLLinear", "SpectralLinear"]


class SpectralLinear(nn.Linear):
    """deel-lip's `SpectralDense`: power iteration then Björck on the weight; orthogonal init."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        eps_spectral: float = 1e-3,
        eps_bjorck: float = 1e-3,
        beta: float = 0.5,
        max_power_iter: int = 10,
        max_bjorck_iter: int = 15,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        nn.init.orthogonal_(self.weight)
        if bias:
            nn.init.zeros_(self.bias)
        parametrize.register_parametrization(
            self,
            "weight",
            SpectralBjorck(
                out_features,
                eps_spectral=eps_spectral,
                eps_bjorck=eps_bjorck,
                beta=beta,
                max_power_iter=max_power_iter,
                max_bjorck_iter=max_bjorck_iter,
            ),
        )


class AOLLinear(nn.Linear):
    """Almost-orthogonal dense layer (Prach & Lampert, 2022): norm <= 1 with no iteration."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        nn.init.orthogonal_(self.weight)
        if bias:
            nn.init.zeros_(self.bias)
        parametrize.register_parametrization(self, "weight", AOLRescale())
