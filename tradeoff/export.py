"""Vanilla export: a plain PyTorch model with the constrained weights baked in.

The result holds only `torch.nn` layers (`Conv2d`, `Linear`, `ZeroPad2d`, activations) and the
parameter-free layers of `tradeoff.nn`; it has no parametrizations, so it runs at the speed of
an unconstrained network and loads anywhere `tradeoff` is importable.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bounds import eval_mode, lipschitz_bound, record_input_shapes
from .nn.conv import LipschitzConv2d
from .nn.residual import SLLConv2d, SLLLinear

__all__ = ["Residual", "export_vanilla"]


class Residual(nn.Module):
    """x + branch(x): the exported form of an SLL layer."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)

    def lipschitz_bound(self, input_shape: tuple[int, ...]) -> float:
        """1 + Lip(branch): sound for any branch, looser than the SLL theorem's 1."""
        return 1.0 + lipschitz_bound(self.branch, input_shape)


def _plain_linear(layer: nn.Linear) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    out.weight.data.copy_(layer.weight.detach())
    if layer.bias is not None:
        out.bias.data.copy_(layer.bias.detach())
    return out


def _plain_conv(layer: nn.Conv2d, input_size: tuple[int, int] | None) -> nn.Module:
    padding: object = layer.padding
    pad_layer = None
    if isinstance(layer, LipschitzConv2d):
        if input_size is None:
            raise ValueError(f"{type(layer).__name__} was never run, so its padding is unknown")
        left, right, top, bottom = layer.pad_amounts(input_size)
        if left == right and top == bottom:
            padding = (top, left)
        else:
            padding, pad_layer = 0, nn.ZeroPad2d((left, right, top, bottom))
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
    )
    conv.weight.data.copy_(layer.weight.detach())
    if layer.bias is not None:
        conv.bias.data.copy_(layer.bias.detach())
    return conv if pad_layer is None else nn.Sequential(pad_layer, conv)


def _plain_sll(layer: SLLConv2d | SLLLinear) -> Residual:
    t = layer.scaling().detach()
    w = layer.weight.detach()
    if isinstance(layer, SLLLinear):
        down = nn.Linear(layer.features, layer.inner_features)
        up = nn.Linear(layer.inner_features, layer.features, bias=False)
        down.weight.data.copy_(w)
        up.weight.data.copy_(-2 * (w * t[:, None]).t())
    else:
        p = layer.kernel_size // 2
        down = nn.Conv2d(layer.channels, layer.inner_channels, layer.kernel_size, padding=p)
        up = nn.ConvTranspose2d(
            layer.inner_channels, layer.channels, layer.kernel_size, padding=p, bias=False
        )
        down.weight.data.copy_(w)
        up.weight.data.copy_(-2 * w * t.view(-1, 1, 1, 1))
    down.bias.data.copy_(layer.bias.detach())
    return Residual(nn.Sequential(down, nn.ReLU(), up))


def export_vanilla(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of `model` (eval mode) with constrained layers replaced by plain ones."""
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    with eval_mode(model), torch.no_grad():
        shapes = record_input_shapes(model, tuple(shape)) if shape is not None else {}
        sizes = {k: v[0][-2:] for k, v in shapes.items() if v and len(v[0]) >= 2}
        exported = _convert(model, sizes)
    exported.eval()
    return exported


def _convert(module: nn.Module, sizes: dict[int, tuple[int, ...]]) -> nn.Module:
    if isinstance(module, (SLLConv2d, SLLLinear)):
        return _plain_sll(module)
    if isinstance(module, nn.Conv2d):
        return _plain_conv(module, sizes.get(id(module)))
    if isinstance(module, nn.Linear):
        return _plain_linear(module)
    if isinstance(module, nn.Sequential):
        plain = nn.Sequential(*(_convert(child, sizes) for child in module))
        for attr in ("input_shape", "num_classes"):
            if hasattr(module, attr):
                setattr(plain, attr, getattr(module, attr))
        return plain
    if parametrize.is_parametrized(module):
        raise TypeError(f"cannot export parametrized module {type(module).__name__}")
    return copy.deepcopy(module)
