"""Vanilla export: a plain PyTorch model with the constrained weights baked in.

The result holds only `torch.nn` layers (`Conv2d`, `Linear`, `ZeroPad2d`, activations) and the
parameter-free layers of `tradeoff.nn`; it has no parametrizations, so it runs at the speed of
an unconstrained network and loads anywhere `tradeoff` is importable. A layer family's module
gives its own plain form through a `vanilla_export(input_shape)` method (as in deel-torchlip);
a parametrized `nn.Conv2d`/`nn.Linear` is copied with its constrained weight.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bounds import eval_mode, record_input_shapes
from .nn.residual import Residual

__all__ = ["Residual", "export_vanilla"]


def _plain_linear(layer: nn.Linear) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    out.weight.data.copy_(layer.weight.detach())
    if layer.bias is not None:
        out.bias.data.copy_(layer.bias.detach())
    return out


def _plain_conv(layer: nn.Conv2d, input_size: tuple[int, int] | None) -> nn.Module:
    padding: object = layer.padding
    pad_layer = None
    pad_amounts = getattr(layer, "pad_amounts", None)  # tradeoff's convolutions pad themselves
    if pad_amounts is not None:
        if input_size is None:
            raise ValueError(f"{type(layer).__name__} was never run, so its padding is unknown")
        left, right, top, bottom = pad_amounts(input_size)
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


def export_vanilla(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A copy of `model` (eval mode) with constrained layers replaced by plain ones."""
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    with eval_mode(model), torch.no_grad():
        shapes = record_input_shapes(model, tuple(shape)) if shape is not None else {}
        exported = _convert(model, {k: v[0] for k, v in shapes.items() if v})
    exported.eval()
    return exported


def _convert(module: nn.Module, shapes: dict[int, tuple[int, ...]]) -> nn.Module:
    """The plain form of `module`: its own `vanilla_export(input_shape)` where it has one (a
    layer family's module), else torch's layer with its (constrained) weight copied."""
    own = getattr(module, "vanilla_export", None)
    if callable(own):
        return own(shapes.get(id(module)))
    if isinstance(module, nn.Conv2d):
        shape = shapes.get(id(module))
        return _plain_conv(module, tuple(shape[-2:]) if shape is not None else None)
    if isinstance(module, nn.Linear):
        return _plain_linear(module)
    if isinstance(module, nn.Sequential):
        plain = nn.Sequential(*(_convert(child, shapes) for child in module))
        for attr in ("input_shape", "num_classes"):
            if hasattr(module, attr):
                setattr(plain, attr, getattr(module, attr))
        return plain
    if parametrize.is_parametrized(module):
        raise TypeError(f"cannot export parametrized module {type(module).__name__}")
    return copy.deepcopy(module)
