"""Model zoo: a registry of small builders with plain keyword options (timm style).

`create("seed_conv", input_shape=(1, 28, 28), num_classes=10, layer="aol")` builds a model;
`available()` lists the names. Every model is a `LipNet` (an `nn.Sequential` that remembers
its input shape), so `tradeoff.certificates` can bound it layer by layer.

Options shared by the builders: `layer` (a layer family of `tradeoff.nn.families`: spectral,
aol, plain, sll, cpl, sandwich, cayley, ...), `activation`, `aol_side`, which Gram matrix
rescales AOL dense layers (auto | input | output, see `tradeoff.nn.AOLLinear`; auto takes the
smaller one), and the other families' own options (`families.defaults()`): a family refuses
an option of another family set to a non-default value. Families whose layers
carry their own activation (sll, cpl, sandwich) take no `activation` after those layers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from torch import nn

from . import nn as lnn
from .nn import families

__all__ = [
    "ACTIVATIONS",
    "CONVNET_WIDTHS",
    "POOLINGS",
    "LipNet",
    "available",
    "create",
    "register",
]

ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "groupsort2": lambda c: lnn.GroupSort2(),
    "groupsort4": lambda c: lnn.GroupSort(4),
    "fullsort": lambda c: lnn.FullSort(),
    "maxmin": lambda c: lnn.MaxMin(),
    "householder": lambda c: lnn.Householder(c),
    "relu": lambda c: nn.ReLU(),
    "abs": lambda c: lnn.Abs(),
}
POOLINGS = ("l2norm", "avg", "max", "invertible", "stride")
# Base widths of the comparison study's ConvNet sizes (Prach et al., CVPR 2024).
CONVNET_WIDTHS = {"xs": 16, "s": 32, "m": 64, "l": 128}
# Version of the recipe a pickled LipNet is rebuilt from. 2: `aol_side` exists (default "auto");
# recipes of version 1 were built with AOL dense layers rescaled on the input side.
RECIPE_VERSION = 2


class LipNet(nn.Sequential):
    """An `nn.Sequential` built for inputs of `input_shape` (C, H, W) and `num_classes`.

    A model made by `create` remembers its recipe (`spec`), so it pickles as recipe plus
    `state_dict` (parametrized modules cannot be pickled directly); `torch.save(model)` and
    `mlflow.pytorch.log_model` therefore work.
    """

    def __init__(self, *layers: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(*layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.spec: tuple[str, dict[str, object]] | None = None

    def __reduce__(self):
        if self.spec is None:
            return super().__reduce__()
        name, opts = self.spec
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        args = (name, self.input_shape, self.num_classes, opts, state, self.training)
        return (_rebuild, (*args, RECIPE_VERSION))


def _rebuild(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    opts: dict[str, object],
    state: dict[str, object],
    training: bool,
    recipe: int = 1,
) -> LipNet:
    if recipe < 2 and "aol_side" in options(name):
        opts = {"aol_side": "input", **opts}
    model = create(name, input_shape=input_shape, num_classes=num_classes, **opts)
    model.load_state_dict(state)
    return model.train(training)


_BUILDERS: dict[str, Callable[..., LipNet]] = {}


def register(fn: Callable[..., LipNet]) -> Callable[..., LipNet]:
    """Add a builder `fn(input_shape, num_classes, **options)` to the zoo under its name."""
    _BUILDERS[fn.__name__] = fn
    return fn


def available() -> list[str]:
    """Names of the registered models."""
    return sorted(_BUILDERS)


def options(name: str) -> dict[str, object]:
    """The keyword options of model `name` with their defaults: its builder's, and the layer
    families' options (`aol_side`, ...) for a builder that passes them on (`**family_options`)."""
    params = inspect.signature(_builder(name)).parameters.values()
    opts = {
        p.name: p.default
        for p in params
        if p.name not in ("input_shape", "num_classes") and p.kind is not p.VAR_KEYWORD
    }
    if any(p.kind is p.VAR_KEYWORD for p in params):
        opts.update(families.defaults())
    return opts


def _builder(name: str) -> Callable[..., LipNet]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return _BUILDERS[name]


def create(
    name: str,
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    **opts: object,
) -> LipNet:
    """Build model `name` for inputs (C, H, W) and `num_classes` classes."""
    builder = _builder(name)
    valid = options(name)
    unknown = sorted(set(opts) - set(valid))
    opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()}
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"valid options: {', '.join(valid)}"
        )
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes (got {input_shape})")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (got {num_classes})")
    model = builder(shape, int(num_classes), **opts)
    model.spec = (name, dict(opts))
    return model


# -- building blocks ---------------------------------------------------------------------------


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)} (got {value!r})")


def _activation(name: str, channels: int) -> nn.Module:
    _check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name](channels)


def _splice(module: nn.Module) -> list[nn.Module]:
    """A builder's layer as a list: a plain `nn.Sequential` is spliced in layer by layer."""
    return list(module) if type(module) is nn.Sequential else [module]


def _conv(
    layer: str,
    c_in: int,
    c_out: int,
    size: tuple[int, int],
    kernel_size: int = 3,
    stride: int = 1,
    **opts: object,
) -> list[nn.Module]:
    """A linear convolution of family `layer` (or its frame), `same` output size."""
    return _splice(families.conv(layer, c_in, c_out, kernel_size, stride, size, **opts))


def _conv_act(
    layer: str,
    activation: str,
    c_in: int,
    c_out: int,
    size: tuple[int, int],
    kernel_size: int = 3,
    **opts: object,
) -> list[nn.Module]:
    """A convolution and its activation: the family's block where it has one for these
    widths (it carries its own activation), else a convolution then `activation`."""
    own = families.block(layer, c_in, c_out, kernel_size, size, **opts)
    if own is not None:
        return _splice(own)
    return [*_conv(layer, c_in, c_out, size, kernel_size, **opts), _activation(activation, c_out)]


def _dense_act(
    layer: str, activation: str, fan_in: int, fan_out: int, **opts: object
) -> list[nn.Module]:
    """A dense layer and its activation, as `_conv_act`."""
    own = families.dense_block(layer, fan_in, fan_out, **opts)
    if own is not None:
        return _splice(own)
    return [families.linear(layer, fan_in, fan_out, **opts), _activation(activation, fan_out)]


def _require_resizing(model: str, layer: str) -> None:
    if not families.resizes(layer):
        fit = [name for name in families.names() if families.resizes(name)]
        raise ValueError(
            f"layer={layer!r} does not fit {model}: its layers keep their width, and {model} "
            f"changes the width at every layer; use it in convnet, lipconvnet or sll_net, or "
            f"one of {', '.join(fit)} here"
        )


def _downsample(
    pooling: str,
    layer: str,
    activation: str,
    channels: int,
    size: tuple[int, int],
    **opts: object,
) -> tuple[list[nn.Module], int, tuple[int, int]]:
    """Layers that halve the resolution, with the channel count and size they produce."""
    _check_choice("pooling", pooling, POOLINGS)
    half = (size[0] // 2, size[1] // 2)
    if min(half) < 1:
        raise ValueError(f"input too small for another downsampling (feature map {size})")
    if pooling == "l2norm":
        return [lnn.ScaledL2NormPool2d(2)], channels, half
    if pooling == "avg":
        return [lnn.ScaledAvgPool2d(2)], channels, half
    if pooling == "max":
        return [nn.MaxPool2d(2)], channels, half
    if pooling == "invertible":
        if size[0] % 2 or size[1] % 2:
            raise ValueError(
                f"pooling='invertible' needs even feature-map sizes (got {size}); "
                "choose another pooling or fewer stages"
            )
        return [lnn.InvertibleDownsampling(2)], channels * 4, half
    strided = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    conv = _conv(layer, channels, channels, size, 3, stride=2, **opts)
    return [*conv, _activation(activation, channels)], channels, strided


def _head(
    layer: str, fan_in: int, hidden: int, num_classes: int, activation: str, **opts: object
) -> list[nn.Module]:
    """Flatten, an optional dense layer of `hidden` units, and a linear head without bias."""
    layers: list[nn.Module] = [nn.Flatten()]
    if hidden:
        layers += _dense_act(layer, activation, fan_in, hidden, **opts)
        fan_in = hidden
    layers.append(families.linear(layer, fan_in, num_classes, bias=False, **opts))
    return layers


def _halving(
    layer: str, c_in: int, c_out: int, size: tuple[int, int], **opts: object
) -> tuple[list[nn.Module], tuple[int, int]]:
    """A 2×2 stride-2 convolution from c_in to c_out channels, zero-padding an odd side by one
    (bottom/right), with the size it produces."""
    half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    return _conv(layer, c_in, c_out, size, kernel_size=2, stride=2, **opts), half


def _halvings(size: tuple[int, int]) -> int:
    """How many halvings (rounding up) bring a feature map of `size` to 1×1."""
    return max(math.ceil(math.log2(s)) for s in size) if max(size) > 1 else 0


def _ints(values: Sequence[int] | int) -> tuple[int, ...]:
    return (int(values),) if isinstance(values, int) else tuple(int(v) for v in values)


# -- models ------------------------------------------------------------------------------------


@register
def seed_conv(
    input_shape: tuple[int, int, int],
    num_classes: int,
    layer: str = "spectral",
    activation: str = "groupsort2",
    pooling: str = "l2norm",
    filters: Sequence[int] = (16, 32),
    hidden: int = 64,
    **family_options: object,
) -> LipNet:
    """The convolutional model of deel-lip's "Getting started 2".

    conv 16 → GroupSort2 → L2-norm pool 2 → conv 32 → GroupSort2 → L2-norm pool 2 → Flatten →
    dense 64 → GroupSort2 → dense K without bias; 3×3 `same` convolutions, orthogonal init.
    """
    opts = families.validate(layer, family_options)
    _require_resizing("seed_conv", layer)
    c, h, w = input_shape
    size = (h, w)
    layers: list[nn.Module] = []
    for f in _ints(filters):
        layers += _conv_act(layer, activation, c, f, size, **opts)
        pool, c, size = _downsample(pooling, layer, activation, f, size, **opts)
        layers += pool
    flat = c * size[0] * size[1]
    layers += [
        nn.Flatten(),
        *_dense_act(layer, activation, flat, hidden, **opts),
        families.linear(layer, hidden, num_classes, bias=False, **opts),
    ]
    return LipNet(*layers, input_shape=input_shape, num_classes=num_classes)


@register
def seed_mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    layer: str = "spectral",
    activation: str = "groupsort2",
    hidden: Sequence[int] = (64, 32),
    **family_options: object,
) -> LipNet:
    """The MLP of deel-lip's "Getting started 1": Flatten → 64 → 32 → K with GroupSort2."""
    opts = families.validate(layer, family_options)
    _require_resizing("seed_mlp", layer)
    fan_in = input_shape[0] * input_shape[1] * input_shape[2]
    layers: list[nn.Module] = [nn.Flatten()]
    for width in _ints(hidden):
        layers += _dense_act(layer, activation, fan_in, width, **opts)
        fan_in = width
    layers.append(families.linear(layer, fan_in, num_classes, **opts))
    return LipNet(*layers, input_shape=input_shape, num_classes=num_classes)


@register
def lipconvnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 32,
    depth: int = 2,
    stages: int = 3,
    layer: str = "spectral",
    activation: str = "groupsort2",
    pooling: str = "stride",
    kernel_size: int = 3,
    hidden: int = 0,
    **family_options: object,
) -> LipNet:
    """A plain 1-Lipschitz ConvNet in the LipConvnet family (Singla & Feizi).

    `stages` stages of `depth` convolutions each; the channel count starts at `width` and
    doubles at every stage; each stage ends with a downsampling (`pooling`: a stride-2
    convolution, an L2-norm, scaled-average or max pool, or an invertible downsampling).
    An optional dense layer of `hidden` units precedes the linear head.
    """
    if width < 1 or depth < 1 or stages < 0:
        raise ValueError(
            f"width and depth must be >= 1 and stages >= 0 (got {width}, {depth}, {stages})"
        )
    opts = families.validate(layer, family_options)
    c, h, w = input_shape
    size = (h, w)
    layers: list[nn.Module] = []
    for stage in range(stages + 1):
        channels = width * 2**stage
        for _ in range(depth):
            layers += _conv_act(layer, activation, c, channels, size, kernel_size, **opts)
            c = channels
        if stage < stages:
            pool, c, size = _downsample(pooling, layer, activation, c, size, **opts)
            layers += pool
    layers += _head(layer, c * size[0] * size[1], hidden, num_classes, activation, **opts)
    return LipNet(*layers, input_shape=input_shape, num_classes=num_classes)


@register
def sll_net(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 32,
    depth: int = 2,
    stages: int = 2,
    inner_factor: int = 1,
    layer: str = "aol",
    **family_options: object,
) -> LipNet:
    """A residual network of SDP-based Lipschitz layers (SLL, Araujo et al., 2023).

    A 3×3 stem convolution to `width` channels, then `stages` stages of `depth` SLL residual
    convolutions (inner width `inner_factor`× the channels) each followed by an invertible
    downsampling and a 1×1 convolution that doubles the channels, then `depth` more SLL layers
    and a linear head. `layer` is the family of the stem, the 1×1 and the head.
    """
    if width < 1 or depth < 1 or stages < 0 or inner_factor < 1:
        raise ValueError(
            "width, depth and inner_factor must be >= 1 and stages >= 0 "
            f"(got {width}, {depth}, {inner_factor}, {stages})"
        )
    opts = families.validate(layer, family_options)
    c, h, w = input_shape
    size = (h, w)
    layers: list[nn.Module] = _conv(layer, c, width, size, **opts)
    c = width
    for stage in range(stages + 1):
        layers += [lnn.SLLConv2d(c, c * inner_factor) for _ in range(depth)]
        if stage < stages:
            if size[0] % 2 or size[1] % 2:
                raise ValueError(
                    f"sll_net downsamples by 2 at each of its {stages} stages, so the feature "
                    f"map must have even sizes (got {size}); use fewer stages or pad the input"
                )
            size = (size[0] // 2, size[1] // 2)
            layers += [lnn.InvertibleDownsampling(2), *_conv(layer, c * 4, c * 2, size, 1, **opts)]
            c *= 2
    layers += [
        nn.Flatten(),
        families.linear(layer, c * size[0] * size[1], num_classes, bias=False, **opts),
    ]
    return LipNet(*layers, input_shape=input_shape, num_classes=num_classes)


@register
def convnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    size: str = "xs",
    layer: str = "aol",
    activation: str = "maxmin",
    depth: int = 5,
    blocks: int | None = None,
    width: int | None = None,
    hidden: int = 0,
    **family_options: object,
) -> LipNet:
    """The ConvNet of "1-Lipschitz Layers Compared" (Prach, Brau, Buttazzo, Lampert, CVPR 2024)
    in its sizes `xs`, `s`, `m`, `l`: base widths 16, 32, 64, 128.

    A 1×1 convolution from the input's channels to the base width (the study concatenates zero
    channels first), then `blocks` blocks, each of `depth` 3×3 convolutions with an activation
    (MaxMin, as in the study) at a constant width, ending in a 2×2 stride-2 convolution that
    halves the resolution and doubles the channels. By default there are as many blocks as
    bring the feature map to 1×1 (5 for 32×32 and 28×28 inputs, 3 for 8×8). A linear head
    without bias, after an optional dense layer of `hidden` units, gives the logits.

    `layer` is the family of every convolution and dense layer (`tradeoff.nn.families`); for a
    family whose layers carry their own activation (sll, cpl, sandwich) each block's 3×3
    convolutions are its layers, with no activation after them, and the stem, the
    downsamplings and the head are its frame's layers (AOL for sll and cpl, as in `sll_net`;
    Cayley for sandwich). `width` overrides the size's base width.
    """
    _check_choice("size", size, tuple(CONVNET_WIDTHS))
    opts = families.validate(layer, family_options)
    c, h, w = input_shape
    most = _halvings((h, w))
    blocks = most if blocks is None else blocks
    width = CONVNET_WIDTHS[size] if width is None else width
    if width < 1 or depth < 1 or blocks < 0 or hidden < 0:
        raise ValueError(
            "width and depth must be >= 1, blocks and hidden >= 0 "
            f"(got {width}, {depth}, {blocks}, {hidden})"
        )
    if blocks > most:
        raise ValueError(
            f"blocks={blocks} would halve a {h}×{w} input below 1×1; at most {most} blocks"
        )
    fmap = (h, w)
    layers: list[nn.Module] = _conv(layer, c, width, fmap, kernel_size=1, **opts)
    c = width
    for _ in range(blocks):
        for _ in range(depth):
            layers += _conv_act(layer, activation, c, c, fmap, **opts)
        down, fmap = _halving(layer, c, 2 * c, fmap, **opts)
        layers += down
        c *= 2
    layers += _head(layer, c * fmap[0] * fmap[1], hidden, num_classes, activation, **opts)
    return LipNet(*layers, input_shape=input_shape, num_classes=num_classes)
