"""Sound upper bounds on the L2 Lipschitz constant of layers and models.

Every bound is computed from the weights the layer uses now (its parametrized weight, in eval
mode), in float64:

- linear layers: the exact spectral norm of the weight;
- convolutions: the exact norm of a circular convolution on a grid large enough to embed the
  zero-padded input (N ≥ n + k − 1), whose frequency blocks are diagonalised by the FFT. Zero
  padding is an isometric embedding followed by a crop, so that norm bounds the padded operator
  (Delattre et al., 2023 and 2024); a stride s is folded in exactly by grouping the s² aliased
  frequencies of each output frequency (polyphase), so strided layers are not over-counted;
- parameter-free layers: their exact constants; our own layers through a `lipschitz_bound`
  method that computes the constant from their current weights.

A module that is not known to be Lipschitz raises `NotLipschitzError`; nothing is assumed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .nn.operator_norm import REL_SLACK, conv2d_operator_norm, spectral_norm

__all__ = [
    "REL_SLACK",
    "LayerBound",
    "NotLipschitzError",
    "conv2d_operator_norm",
    "eval_mode",
    "layer_bounds",
    "lipschitz_bound",
    "module_bound",
    "record_input_shapes",
]

_ONE_LIPSCHITZ = (
    nn.ReLU,
    nn.Identity,
    nn.Flatten,
    nn.Tanh,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Softsign,
    nn.PixelUnshuffle,
    nn.PixelShuffle,
    nn.ZeroPad2d,
)
_NOT_LIPSCHITZ = (
    nn.modules.batchnorm._NormBase,
    nn.modules.dropout._DropoutNd,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.MultiheadAttention,
)


class NotLipschitzError(TypeError):
    """A module whose Lipschitz constant this project cannot bound soundly."""


@dataclass(frozen=True)
class LayerBound:
    """One row of a model's bound: the module, the input shape it sees and its bound."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    bound: float


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put `model` in eval mode (the weights it uses are then fixed and cached)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _conv_padding_total(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int]:
    if hasattr(conv, "pad_amounts"):
        left, right, top, bottom = conv.pad_amounts(size)
        return (top + bottom, left + right)
    if conv.padding == "same":
        return tuple(d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
    if conv.padding == "valid":
        return (0, 0)
    return (2 * conv.padding[0], 2 * conv.padding[1])


def _conv_bound(conv: nn.Conv2d, shape: tuple[int, ...]) -> float:
    if conv.padding_mode not in ("zeros", "circular"):
        raise NotLipschitzError(
            f"{type(conv).__name__} with padding_mode={conv.padding_mode!r} is not supported; "
            "use 'zeros' or 'circular' padding"
        )
    size = (int(shape[-2]), int(shape[-1]))
    circular = conv.padding_mode == "circular"
    return conv2d_operator_norm(
        conv.weight,
        size,
        stride=tuple(conv.stride),
        padding=_conv_padding_total(conv, size),
        dilation=tuple(conv.dilation),
        groups=conv.groups,
        circular=circular,
    )


def _conv_transpose_bound(conv: nn.ConvTranspose2d, shape: tuple[int, ...]) -> float:
    # A stride-1 transposed convolution is the adjoint of the convolution with the same kernel
    # from its output size to its input size, and an operator and its adjoint share the norm.
    if (
        tuple(conv.stride) != (1, 1)
        or tuple(conv.dilation) != (1, 1)
        or conv.groups != 1
        or tuple(conv.output_padding) != (0, 0)
        or conv.padding_mode != "zeros"
    ):
        raise NotLipschitzError(
            "only stride-1, undilated, ungrouped ConvTranspose2d layers with zero padding are "
            "supported"
        )
    kh, kw = conv.kernel_size
    ph, pw = conv.padding
    out_size = (int(shape[-2]) + kh - 1 - 2 * ph, int(shape[-1]) + kw - 1 - 2 * pw)
    return conv2d_operator_norm(conv.weight, out_size, padding=(2 * ph, 2 * pw))


def _pool_overlap_bound(kernel_size, stride) -> float:
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    s = k if stride is None else stride
    s = (s, s) if isinstance(s, int) else tuple(s)
    return math.sqrt(math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1]))


def module_bound(module: nn.Module, shapes: dict[int, list[tuple[int, ...]]]) -> float:
    """Sound bound for one module, given the input shapes recorded for every module."""
    if isinstance(module, _NOT_LIPSCHITZ):
        raise NotLipschitzError(
            f"{type(module).__name__} is not Lipschitz-bounded here (normalisation and dropout "
            "layers change the constant with the data or at random); remove it from the model"
        )
    if isinstance(module, nn.Sequential) and not hasattr(module, "lipschitz_bound"):
        if type(module).forward is not nn.Sequential.forward:
            raise NotLipschitzError(
                f"{type(module).__name__} overrides Sequential.forward, so it may not be the "
                "composition of its children; give it a `lipschitz_bound(input_shape)` method"
            )
        bound = 1.0
        for child in module:
            bound *= module_bound(child, shapes)
        return bound
    seen = shapes.get(id(module))
    if not seen:
        # Never called on the sample input: it does not act on the output.
        return 1.0
    return max(_leaf_bound(module, shape) for shape in seen)


def _leaf_bound(module: nn.Module, shape: tuple[int, ...]) -> float:
    if hasattr(module, "lipschitz_bound") and callable(module.lipschitz_bound):
        return float(module.lipschitz_bound(shape))
    if isinstance(module, nn.Linear):
        return spectral_norm(module.weight.detach().to(torch.float64))
    if isinstance(module, nn.Conv2d):
        return _conv_bound(module, shape)
    if isinstance(module, nn.ConvTranspose2d):
        return _conv_transpose_bound(module, shape)
    if isinstance(module, _ONE_LIPSCHITZ):
        return 1.0
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.MaxPool2d):
        return _pool_overlap_bound(module.kernel_size, module.stride)
    if isinstance(module, nn.AvgPool2d):
        k = module.kernel_size
        area = k * k if isinstance(k, int) else k[0] * k[1]
        return _pool_overlap_bound(module.kernel_size, module.stride) / math.sqrt(area)
    raise NotLipschitzError(
        f"cannot bound the Lipschitz constant of {type(module).__name__}: it is neither a known "
        "layer nor an nn.Sequential of known layers. Give it a `lipschitz_bound(input_shape)` "
        "method that computes a sound bound from its weights, or build it from tradeoff.nn layers"
    )


def record_input_shapes(
    model: nn.Module, input_shape: tuple[int, ...]
) -> dict[int, list[tuple[int, ...]]]:
    """Input shape (without batch) of every submodule on one forward pass of a zero sample."""
    shapes: dict[int, list[tuple[int, ...]]] = {}

    def hook(mod: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            shape = tuple(args[0].shape[1:])
            seen = shapes.setdefault(id(mod), [])
            if shape not in seen:
                seen.append(shape)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        param = next(model.parameters(), None)
        like = param if param is not None else torch.zeros(())
        with torch.no_grad():
            model(like.new_zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return shapes


def _resolve_shape(model: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(
            "the input shape is unknown: pass input_shape=(C, H, W) (models from tradeoff.zoo "
            "carry it as `model.input_shape`)"
        )
    return tuple(int(s) for s in shape)


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> float:
    """Sound upper bound on the L2 Lipschitz constant of `model` as used in eval mode.

    The model must be an `nn.Sequential` (any nesting) of bounded layers; the bound is the
    product of the layer bounds. `input_shape` (C, H, W) defaults to `model.input_shape`.
    """
    shape = _resolve_shape(model, input_shape)
    with eval_mode(model):
        shapes = record_input_shapes(model, shape)
        return module_bound(model, shapes)


def layer_bounds(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerBound]:
    """The leaf layers of a (nested) Sequential model, in order, each with its bound."""
    shape = _resolve_shape(model, input_shape)
    rows: list[LayerBound] = []
    with eval_mode(model):
        shapes = record_input_shapes(model, shape)

        def walk(mod: nn.Module, prefix: str) -> None:
            if isinstance(mod, nn.Sequential):
                for name, child in mod.named_children():
                    walk(child, f"{prefix}.{name}" if prefix else name)
                return
            for s in shapes.get(id(mod), []):
                rows.append(LayerBound(prefix, mod, s, module_bound(mod, shapes)))

        walk(model, "")
    return rows
