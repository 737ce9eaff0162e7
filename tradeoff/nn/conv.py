"""1-Lipschitz convolutions: `nn.Conv2d` with a registered weight parametrization.

Padding is `same` (TensorFlow's convention, also for stride 2: the extra row and column go at
the bottom and right) or `valid`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .parametrizations import AOLRescale, SpectralBjorck, deel_conv_coefficient
from .pooling import _pair

__all__ = ["AOLConv2d", "LipschitzConv2d", "SpectralConv2d", "same_padding"]


def same_padding(
    size: tuple[int, int], kernel_size: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """TensorFlow `same` zero padding as (left, right, top, bottom) for `F.pad`."""
    pads = []
    for n, k, s in zip(size, kernel_size, stride, strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


class LipschitzConv2d(nn.Conv2d):
    """Shared plumbing of the constrained convolutions: padding modes and orthogonal init."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str = "same",
        bias: bool = True,
    ) -> None:
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid' (got {padding!r})")
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias
        )
        self.padding_kind = padding
        w = self.weight.data
        nn.init.orthogonal_(w.view(out_channels, -1))
        if bias:
            nn.init.zeros_(self.bias)

    def pad_amounts(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Zero padding (left, right, top, bottom) applied to an input of spatial `size`."""
        if self.padding_kind == "valid":
            return (0, 0, 0, 0)
        return same_padding(size, self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pad_amounts(tuple(x.shape[-2:]))
        if pad[0] == pad[1] and pad[2] == pad[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad[2], pad[0]))
        return F.conv2d(F.pad(x, pad), self.weight, self.bias, self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding_kind!r}, bias={self.bias is not None}"
        )


class SpectralConv2d(LipschitzConv2d):
    """deel-lip's `SpectralConv2D`: Björck-orthonormal reshaped kernel times deel's coefficient.

    The coefficient depends on the input's spatial size: give `input_size=(H, W)`, or it is
    fixed from the first input the layer sees (as deel-lip does when the layer is built).
    With `exact_cap` (the default) the coefficient is capped so that the exact operator norm
    is at most 1 (see `SpectralBjorck`); `exact_cap=False` is deel-lip's layer as it is.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str = "same",
        bias: bool = True,
        *,
        input_size: int | tuple[int, int] | None = None,
        eps_spectral: float = 1e-3,
        eps_bjorck: float = 1e-3,
        beta: float = 0.5,
        max_power_iter: int = 10,
        max_bjorck_iter: int = 15,
        exact_cap: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias)
        self.input_size: tuple[int, int] | None = None
        self.exact_cap = exact_cap
        parametrize.register_parametrization(
            self,
            "weight",
            SpectralBjorck(
                out_channels,
                eps_spectral=eps_spectral,
                eps_bjorck=eps_bjorck,
                beta=beta,
                max_power_iter=max_power_iter,
                max_bjorck_iter=max_bjorck_iter,
            ),
        )
        if input_size is not None:
            self.set_input_size(_pair(input_size))

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Fix deel-lip's correction coefficient for inputs of spatial `size`."""
        self.input_size = (int(size[0]), int(size[1]))
        coef = deel_conv_coefficient(self.kernel_size, self.stride, size, self.padding_kind)
        left, right, top, bottom = self.pad_amounts(self.input_size)
        param = self.parametrizations.weight[0]
        with torch.no_grad():
            param.coef.fill_(coef)
        if self.exact_cap:
            param.conv_geometry = {
                "input_size": self.input_size,
                "stride": tuple(self.stride),
                "padding": (top + bottom, left + right),
            }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is None:
            self.set_input_size(tuple(x.shape[-2:]))
        return super().forward(x)


class AOLConv2d(LipschitzConv2d):
    """Almost-orthogonal convolution (Prach & Lampert, 2022): norm <= 1 with no iteration."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str = "same",
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias)
        # AOL's identity-like initialisation keeps the rescaling mild; extra outputs orthogonal.
        with torch.no_grad():
            self.weight.zero_()
            nn.init.dirac_(self.weight[: min(in_channels, out_channels)])
            if out_channels > in_channels:
                extra = self.weight[in_channels:].reshape(out_channels - in_channels, -1)
                nn.init.orthogonal_(extra)
                self.weight[in_channels:] = extra.reshape_as(self.weight[in_channels:])
        parametrize.register_parametrization(self, "weight", AOLRescale())
