"""1-Lipschitz dense layers: `nn.Linear` with a registered weight parametrization."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._torch_private import parametrize_cache_enabled
from .parametrizations import AOL_SIDES, AOLRescale, SpectralBjorck

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A training step mixes the layer's outputs by the n × n Björck polynomial instead of
        # forming the constrained weight (SpectralBjorck.linear); eval mode uses the cached one.
        weights = self.parametrizations.weight
        if self.training and len(weights) == 1 and not parametrize_cache_enabled():
            return weights[0].linear(x, weights.original, self.bias)
        return super().forward(x)


class AOLLinear(nn.Linear):
    """Almost-orthogonal dense layer (Prach & Lampert, 2022): norm <= 1 with no iteration.

    `side` picks which Gram matrix sets the rescaling: "input" (the paper's W·diag(d), from
    the in × in matrix |WᵀW|), "output" (diag(d)·W, from the out × out |WWᵀ|), or "auto", the
    smaller of the two (output for a layer that narrows, as almost every dense layer does).
    """

    SIDES = ("auto", *AOL_SIDES)

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, side: str = "auto"
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if side not in self.SIDES:
            raise ValueError(f"side must be one of {self.SIDES} (got {side!r})")
        if side == "auto":
            side = "output" if out_features < in_features else "input"
        nn.init.orthogonal_(self.weight)
        if bias:
            nn.init.zeros_(self.bias)
        parametrize.register_parametrization(self, "weight", AOLRescale(side=side))
