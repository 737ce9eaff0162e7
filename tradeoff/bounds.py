"""Sound upper bounds on the L2 Lipschitz constant of layers and models.

Every bound is computed from the weights the layer uses now (its parametrized weight, in eval
mode), in float64:

- linear layers: the exact spectral norm of the weight;
- convolutions with zero padding: the exact norm of a circular convolution on a grid large
  enough to embed the zero-padded input (N ≥ n + k − 1), whose frequency blocks are
  diagonalised by the FFT. Zero padding is an isometric embedding followed by a crop, so that
  norm bounds the padded operator (Delattre et al., 2023 and 2024); a stride s is folded in
  exactly by grouping the s² aliased frequencies of each output frequency (polyphase);
- circular padding: the circular convolution on the input's own grid (taps folded onto it when
  the kernel is wider than the input), sampled where torch samples it; reflect and replicate
  padding: the unpadded convolution on the padded size times √(most copies of one pixel);
- pooling: max pools √(most windows one pixel is in), average pools the exact norm of their
  averaging matrix (separable per axis), both with torch's padding, dilation and ceil_mode;
- parameter-free layers: their exact constants; our own layers through their
  `lipschitz_bound` method, which computes the constant from their current weights.

What is bounded is decided by one walk (`leaves`), shared by `lipschitz_bound`,
`layer_bounds` and through them `certify`, `Certifier` and `audit`. A model is accepted when
it is a composition (an `nn.Sequential`, or a subclass that keeps Sequential's forward,
iteration and call) of leaves whose exact class is known here, or whose class defines its own
`lipschitz_bound(input_shape)`; when no module carries a forward or forward-pre hook and no
global module forward hook is registered; and when every option of every layer is covered.
Anything else raises `NotLipschitzError` naming the layer and what is not covered.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.utils import parametrize

from .nn import activations, conv, linear, pooling, residual
from .nn.operator_norm import (
    REL_SLACK,
    conv2d_frequency_blocks,
    conv2d_operator_norm,
    dilate_kernel,
    spectral_norm,
)

__all__ = [
    "LINEAR_CLASSES",
    "REL_SLACK",
    "LayerBound",
    "NotLipschitzError",
    "class_of",
    "conv2d_operator_norm",
    "eval_mode",
    "layer_bounds",
    "leaf_bound",
    "leaves",
    "lipschitz_bound",
    "module_bound",
    "padding_copies",
    "record_input_shapes",
    "resolve_input_shape",
]

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


# -- the walk: what is accepted --------------------------------------------------------------


def _label(name: str, module: nn.Module) -> str:
    return f"layer {name!r} ({type(module).__name__})" if name else type(module).__name__


def class_of(module: nn.Module) -> type:
    """The class that defines `module`'s behaviour: a parametrized module's own class, not the
    subclass `torch.nn.utils.parametrize` generates (it adds only the weight's property)."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def _is_recorder(hook: Callable) -> bool:
    return getattr(hook, "_tradeoff_recorder", False)


def _check_hooks(model: nn.Module) -> None:
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if any(not _is_recorder(h) for h in getattr(torch_module, kind, {}).values()):
            raise NotLipschitzError(
                "tradeoff.bounds: a global module forward hook is registered "
                "(torch.nn.modules.module.register_module_forward_hook or _pre_hook), which may "
                "change what every layer returns; remove it (handle.remove()) before bounding"
            )
    for name, mod in model.named_modules():
        hooks = (*mod._forward_hooks.values(), *mod._forward_pre_hooks.values())
        if any(not _is_recorder(h) for h in hooks):
            raise NotLipschitzError(
                f"tradeoff.bounds: {_label(name, mod)} carries a forward hook, which may change "
                "what it returns; remove the hook (handle.remove()) before bounding or certifying"
            )


def _check_instance(module: nn.Module, name: str) -> None:
    cls = type(module)
    shadowed = [
        k for k, v in vars(module).items() if callable(v) and callable(getattr(cls, k, None))
    ]
    if shadowed:
        raise NotLipschitzError(
            f"tradeoff.bounds: {_label(name, module)} replaces its method {shadowed[0]!r} on the "
            "instance, so it may compute something else; define a class with a "
            "`lipschitz_bound(input_shape)` method instead"
        )


_SEQUENTIAL_CALL = ("forward", "__iter__", "__call__", "_call_impl", "_wrapped_call_impl")


def _composition(module: nn.Module, name: str) -> list[tuple[str, nn.Module]] | None:
    """The children of a module whose forward is their composition, in order; None for a leaf."""
    cls = class_of(module)
    if not isinstance(module, nn.Sequential) or callable(vars(cls).get("lipschitz_bound")):
        return None
    for attr in _SEQUENTIAL_CALL:
        if getattr(cls, attr) is not getattr(nn.Sequential, attr):
            raise NotLipschitzError(
                f"tradeoff.bounds: {_label(name, module)} overrides Sequential.{attr}, so it may "
                "not be the composition of its children; give it a "
                "`lipschitz_bound(input_shape)` method or use nn.Sequential"
            )
    _check_instance(module, name)
    return [(n, child) for n, child in module._modules.items() if child is not None]


def leaves(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The leaf layers of `module` with their names, in the order its forward applies them.

    Raises `NotLipschitzError` for anything this module cannot bound: a container whose forward
    is not the composition of its children, a layer of unknown class (a subclass of a known
    one counts as unknown unless it defines its own `lipschitz_bound`), a forward hook.
    """
    _check_hooks(module)
    yield from _leaves(module, "")


def _leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    children = _composition(module, prefix)
    if children is None:
        _rule(module, prefix)
        yield prefix, module
        return
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def _rule(module: nn.Module, name: str = "") -> Callable[[nn.Module, tuple[int, ...]], float]:
    """The bound function of a leaf; raises `NotLipschitzError` for an unknown one."""
    if isinstance(module, _NOT_LIPSCHITZ):
        raise NotLipschitzError(
            f"tradeoff.bounds: {_label(name, module)} is not Lipschitz-bounded here "
            "(normalisation and dropout layers change the constant with the data or at random); "
            "remove it from the model"
        )
    _check_instance(module, name)
    cls = class_of(module)
    rule = _KNOWN.get(cls)
    if rule is not None:
        return rule
    if callable(vars(cls).get("lipschitz_bound")):
        return _own_method
    known = next((base for base in cls.__mro__[1:] if base in _KNOWN), None)
    if known is not None:
        raise NotLipschitzError(
            f"tradeoff.bounds: {_label(name, module)} subclasses {known.__name__}, whose bound "
            f"may not hold for what the subclass computes; use {known.__name__} itself or give "
            f"{cls.__name__} its own `lipschitz_bound(input_shape)` method"
        )
    raise NotLipschitzError(
        f"tradeoff.bounds: cannot bound the Lipschitz constant of {_label(name, module)}: it is "
        "neither a known layer nor an nn.Sequential of known layers; give its class a "
        "`lipschitz_bound(input_shape)` method that computes a sound bound from its weights, "
        "or build it from tradeoff.nn layers"
    )


def leaf_bound(module: nn.Module, input_shape: tuple[int, ...], name: str = "") -> float:
    """Sound bound for one leaf layer on inputs of `input_shape` (without batch)."""
    return float(_rule(module, name)(module, tuple(input_shape)))


def module_bound(module: nn.Module, shapes: dict[int, list[tuple[int, ...]]]) -> float:
    """Sound bound for one module, given the input shapes recorded for every module: the
    product over its leaves (each at the largest bound over the shapes it saw)."""
    bound = 1.0
    for name, leaf in leaves(module):
        seen = shapes.get(id(leaf))
        if seen:  # a leaf never called on the sample input does not act on the output
            bound *= max(leaf_bound(leaf, shape, name) for shape in seen)
    return bound


# -- bounds of the known leaves ---------------------------------------------------------------


def _own_method(module: nn.Module, shape: tuple[int, ...]) -> float:
    return float(module.lipschitz_bound(shape))


def _one(module: nn.Module, shape: tuple[int, ...]) -> float:
    return 1.0


def _flatten_bound(module: nn.Flatten, shape: tuple[int, ...]) -> float:
    if module.start_dim % (len(shape) + 1) == 0:
        raise NotLipschitzError(
            f"tradeoff.bounds: Flatten(start_dim={module.start_dim}) merges the batch into one "
            "sample, so no per-sample bound holds; use start_dim=1"
        )
    return 1.0


def _linear_bound(layer: nn.Linear, shape: tuple[int, ...]) -> float:
    return spectral_norm(layer.weight.detach().to(torch.float64))


def _conv_padding_total(conv2d: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(conv2d, conv.LipschitzConv2d):
        left, right, top, bottom = conv2d.pad_amounts(size)
        return (top + bottom, left + right)
    if conv2d.padding == "same":
        return tuple(d * (k - 1) for d, k in zip(conv2d.dilation, conv2d.kernel_size, strict=True))
    if conv2d.padding == "valid":
        return (0, 0)
    return (2 * conv2d.padding[0], 2 * conv2d.padding[1])


def _zero_padded(conv2d: nn.Conv2d) -> bool:
    # tradeoff's convolutions pad with zeros themselves, whatever padding_mode says
    return isinstance(conv2d, conv.LipschitzConv2d) or conv2d.padding_mode == "zeros"


def _padded_index(mode: str, q: int, n: int) -> int:
    if mode == "circular":
        return q % n
    if mode == "replicate":
        return min(max(q, 0), n - 1)
    return -q if q < 0 else (2 * (n - 1) - q if q >= n else q)  # reflect


def padding_copies(conv2d: nn.Conv2d, size: tuple[int, int]) -> int:
    """Most copies of one input pixel in the padded input a convolution reads (1 for zeros)."""
    if _zero_padded(conv2d):
        return 1
    left, right, top, bottom = conv2d._reversed_padding_repeated_twice
    copies = 1
    for n, before, after in ((size[0], top, bottom), (size[1], left, right)):
        seen = Counter(_padded_index(conv2d.padding_mode, q, n) for q in range(-before, n + after))
        copies *= max(seen.values())
    return copies


def _conv_bound(conv2d: nn.Conv2d, shape: tuple[int, ...]) -> float:
    size = (int(shape[-2]), int(shape[-1]))
    geometry = {"stride": tuple(conv2d.stride), "dilation": tuple(conv2d.dilation)}
    if _zero_padded(conv2d):
        padding = _conv_padding_total(conv2d, size)
        return conv2d_operator_norm(
            conv2d.weight, size, padding=padding, groups=conv2d.groups, **geometry
        )
    if conv2d.padding_mode == "circular":
        return _circular_conv_bound(conv2d, size)
    if conv2d.padding_mode in ("reflect", "replicate"):
        left, right, top, bottom = conv2d._reversed_padding_repeated_twice
        padded = (size[0] + top + bottom, size[1] + left + right)
        norm = conv2d_operator_norm(conv2d.weight, padded, groups=conv2d.groups, **geometry)
        return norm * math.sqrt(padding_copies(conv2d, size))
    raise NotLipschitzError(
        f"tradeoff.bounds: {type(conv2d).__name__} with padding_mode={conv2d.padding_mode!r} is "
        "not covered; use 'zeros', 'circular', 'reflect' or 'replicate'"
    )


def _circular_conv_bound(conv2d: nn.Conv2d, size: tuple[int, int]) -> float:
    # torch pads circularly and convolves without padding: output o of an axis reads the input
    # at (o·s − p + j·d) mod n. That is a circular convolution on the input's own n-grid (taps
    # folded mod n: a kernel wider than the input reads a pixel several times) sampled at
    # (o·s − p) mod n. Sampling one whole coset of sZ_n gives the exact polyphase norm; any
    # other sampling is at most √(its largest repeat count) times the unstrided norm.
    left, right, top, bottom = conv2d._reversed_padding_repeated_twice
    w = dilate_kernel(conv2d.weight.detach().to(torch.float64), tuple(conv2d.dilation))
    strides, repeats = [], 1
    for n, k, s, before, after in zip(
        size, w.shape[-2:], conv2d.stride, (top, left), (bottom, right), strict=True
    ):
        positions = [(o * s - before) % n for o in range((n + before + after - k) // s + 1)]
        most = max(Counter(positions).values())
        coset = n % s == 0 and most == 1 and len({p % s for p in positions}) == 1
        coset = coset and len(positions) == n // s
        strides.append(s if coset else 1)
        repeats *= 1 if coset else most
    folded = w.new_zeros(*w.shape[:2], min(w.shape[2], size[0]), min(w.shape[3], size[1]))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            folded[:, :, i % size[0], j % size[1]] += w[:, :, i, j]
    norm = 0.0
    for group in folded.chunk(conv2d.groups, dim=0):
        blocks, scale = conv2d_frequency_blocks(group, size, tuple(strides), circular=True)
        norm = max(norm, spectral_norm(blocks) * scale)
    return norm * math.sqrt(repeats)


def _conv_transpose_bound(layer: nn.ConvTranspose2d, shape: tuple[int, ...]) -> float:
    # A stride-1 transposed convolution is the adjoint of the convolution with the same kernel
    # from its output size to its input size, and an operator and its adjoint share the norm.
    options = {
        "stride": tuple(layer.stride) != (1, 1),
        "dilation": tuple(layer.dilation) != (1, 1),
        "groups": layer.groups != 1,
        "output_padding": tuple(layer.output_padding) != (0, 0),
        "padding_mode": layer.padding_mode != "zeros",
    }
    for option, uncovered in options.items():
        if uncovered:
            raise NotLipschitzError(
                f"tradeoff.bounds: ConvTranspose2d with {option}={getattr(layer, option)!r} is "
                "not covered; only stride-1, undilated, ungrouped, zero-padded ones are"
            )
    kh, kw = layer.kernel_size
    ph, pw = layer.padding
    out_size = (int(shape[-2]) + kh - 1 - 2 * ph, int(shape[-1]) + kw - 1 - 2 * pw)
    return conv2d_operator_norm(layer.weight, out_size, padding=(2 * ph, 2 * pw))


def _pool_axes(pool: nn.Module, shape: tuple[int, ...]) -> list[list[tuple[list[int], int]]]:
    """The windows of each spatial axis of a torch pooling layer on inputs of `shape`."""
    pair = pooling._pair
    k, p = pair(pool.kernel_size), pair(pool.padding)
    s = pair(pool.stride) if pool.stride is not None else k
    d = pair(getattr(pool, "dilation", 1))
    return [
        pooling.pool_windows(int(shape[-2 + a]), k[a], s[a], p[a], d[a], pool.ceil_mode)
        for a in (0, 1)
    ]


def _max_pool_bound(pool: nn.MaxPool2d, shape: tuple[int, ...]) -> float:
    # Each output is the max of its window: ‖Δy‖² ≤ Σ_windows Σ_{i∈window} Δx_i² ≤ m‖Δx‖² with m
    # the most windows one pixel is in (attained where that pixel is the max of all of them).
    if pool.return_indices:
        raise NotLipschitzError(
            "tradeoff.bounds: MaxPool2d with return_indices=True returns indices too; "
            "use return_indices=False"
        )
    most = 1
    for windows in _pool_axes(pool, shape):
        if not all(inside for inside, _ in windows):
            raise NotLipschitzError(
                "tradeoff.bounds: MaxPool2d has a window entirely in its padding (its output is "
                "-inf) on this input size; use less padding or dilation"
            )
        most *= max(Counter(i for inside, _ in windows for i in inside).values())
    return math.sqrt(most)


def _avg_pool_bound(pool: nn.AvgPool2d, shape: tuple[int, ...]) -> float:
    # Torch's divisor is a product of one factor per axis (the window's padded span, its part
    # inside the input, or divisor_override), so the layer is a Kronecker product of two
    # averaging matrices and its norm is the product of theirs.
    norm = 1.0
    for a, windows in enumerate(_pool_axes(pool, shape)):
        matrix = torch.zeros(len(windows), int(shape[-2 + a]), dtype=torch.float64)
        for o, (inside, span) in enumerate(windows):
            if pool.divisor_override:
                divisor = 1
            else:
                divisor = span if pool.count_include_pad else max(len(inside), 1)
            matrix[o, inside] = 1.0 / divisor
        norm *= float(torch.linalg.matrix_norm(matrix, ord=2))
    return norm / abs(pool.divisor_override or 1) * (1 + REL_SLACK)


def _leaky_relu_bound(module: nn.LeakyReLU, shape: tuple[int, ...]) -> float:
    return max(1.0, abs(module.negative_slope))


def _sigmoid_bound(module: nn.Sigmoid, shape: tuple[int, ...]) -> float:
    return 0.25


# Known classes, matched exactly: a subclass may compute something else.
LINEAR_CLASSES = (nn.Linear, linear.SpectralLinear, linear.AOLLinear)
_KNOWN: dict[type, Callable[[nn.Module, tuple[int, ...]], float]] = {
    **dict.fromkeys(
        (nn.ReLU, nn.Identity, nn.Tanh, nn.Hardtanh, nn.ReLU6, nn.Softsign, nn.ZeroPad2d), _one
    ),
    **dict.fromkeys((nn.PixelUnshuffle, nn.PixelShuffle), _one),
    nn.Flatten: _flatten_bound,
    nn.LeakyReLU: _leaky_relu_bound,
    nn.Sigmoid: _sigmoid_bound,
    nn.MaxPool2d: _max_pool_bound,
    nn.AvgPool2d: _avg_pool_bound,
    nn.ConvTranspose2d: _conv_transpose_bound,
    **dict.fromkeys(LINEAR_CLASSES, _linear_bound),
    **dict.fromkeys(
        (nn.Conv2d, conv.LipschitzConv2d, conv.SpectralConv2d, conv.AOLConv2d), _conv_bound
    ),
    # tradeoff's own layers: their `lipschitz_bound` method, inherited or not
    **dict.fromkeys(
        (
            activations.Abs,
            activations.GroupSort,
            activations.GroupSort2,
            activations.FullSort,
            activations.MaxMin,
            activations.Householder,
            pooling.ScaledAvgPool2d,
            pooling.ScaledL2NormPool2d,
            pooling.ScaledGlobalAvgPool2d,
            pooling.InvertibleDownsampling,
            residual.SLLLinear,
            residual.SLLConv2d,
        ),
        _own_method,
    ),
}


# -- models ----------------------------------------------------------------------------------


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

    hook._tradeoff_recorder = True  # the hook check of the walk ignores this one
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


def resolve_input_shape(model: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """`input_shape`, else `model.input_shape` (zoo models carry it); ValueError without."""
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
    shape = resolve_input_shape(model, input_shape)
    with eval_mode(model):
        shapes = record_input_shapes(model, shape)
        return module_bound(model, shapes)


def layer_bounds(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerBound]:
    """The leaf layers of a (nested) Sequential model, in order, each with its bound."""
    shape = resolve_input_shape(model, input_shape)
    rows: list[LayerBound] = []
    with eval_mode(model):
        shapes = record_input_shapes(model, shape)
        for name, leaf in leaves(model):
            seen = shapes.get(id(leaf), [])
            bound = max((leaf_bound(leaf, s, name) for s in seen), default=1.0)
            rows.extend(LayerBound(name, leaf, s, bound) for s in seen)
    return rows
