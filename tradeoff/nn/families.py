"""Layer families: each registers itself once, and the zoo, export and bench find it here.

Interface. A family is one `LayerFamily`, registered when its module is imported (add the
import to `tradeoff/nn/__init__.py`)::

    from . import families

    families.register(
        families.LayerFamily(
            name="soc",
            summary="skew-orthogonal convolutions (Singla & Feizi 2021)",
            # a linear convolution, `same` output size ceil(n / stride):
            conv=lambda c_in, c_out, kernel_size, stride, input_size, **opts: ...,
            # a linear dense layer:
            linear=lambda fan_in, fan_out, bias, **opts: ...,
            # optional, for layers that carry their own activation (SLL, CPL, sandwich):
            # block=lambda c_in, c_out, kernel_size, input_size, **opts: ...,
            # dense_block=lambda fan_in, fan_out, **opts: ...,
            # block_widths="same",  # "same": a block keeps the width (residual); "any"
            # frame="aol",          # whose conv/linear build what this family has none of
            options={"soc_terms": 6},  # the family's options and their defaults
        )
    )

Every builder returns one `nn.Module` (an `nn.Sequential` is spliced into the model layer by
layer) whose class bounds itself (`tradeoff.bounds`) and exports itself: either a standard
`nn.Conv2d`/`nn.Linear` with a `torch.nn.utils.parametrize` constraint, or a module with
`lipschitz_bound(input_shape)` and `vanilla_export(input_shape)` methods. Options are keyword
arguments; the zoo passes a family (and its frame) only the options they declare, and refuses
any other option set to a non-default value, listing the ones the family takes.

Option names are global: prefix them with the family (`aol_side`, `soc_terms`); the zoo's
models take every family's options as keywords (`model.soc_terms=10`), with these defaults.
`names()` lists the families, in registration order; `conv`, `linear`, `block` and
`dense_block` build a layer of a family by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

__all__ = [
    "LayerFamily",
    "block",
    "conv",
    "defaults",
    "dense_block",
    "get",
    "linear",
    "names",
    "options",
    "register",
    "resizes",
    "validate",
]

ConvBuilder = Callable[..., nn.Module]
LinearBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class LayerFamily:
    """One layer family: how it builds each kind of layer, and the options it takes.

    `conv(c_in, c_out, kernel_size, stride, input_size, **opts)` and
    `linear(fan_in, fan_out, bias, **opts)` build linear layers; `block(c_in, c_out,
    kernel_size, input_size, **opts)` and `dense_block(fan_in, fan_out, **opts)` build layers
    that carry their own activation (none follows them), keeping the width when `block_widths`
    is "same". `frame` names the family whose conv and linear build the layers this one has no
    builder for (stems, downsamplings, heads); `options` maps each option to its default and
    `choices` lists the allowed values of the options that take one of a few.
    """

    name: str
    summary: str = ""
    conv: ConvBuilder | None = None
    linear: LinearBuilder | None = None
    block: ConvBuilder | None = None
    dense_block: LinearBuilder | None = None
    block_widths: str = "same"
    frame: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    choices: Mapping[str, tuple[object, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.block_widths not in ("same", "any"):
            raise ValueError(f"block_widths must be 'same' or 'any' (got {self.block_widths!r})")
        linear_parts = self.conv is not None and self.linear is not None
        if not linear_parts and self.frame is None:
            raise ValueError(
                f"layer family {self.name!r} has no conv or no linear builder: name a `frame` "
                "family that builds them"
            )


_FAMILIES: dict[str, LayerFamily] = {}


def register(family: LayerFamily) -> LayerFamily:
    """Add `family` under its name (once: a second family of the same name is refused)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"layer family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def names() -> list[str]:
    """The registered families, in registration order (what the bench and sweeps iterate)."""
    return list(_FAMILIES)


def get(name: str) -> LayerFamily:
    """The family `name`; ValueError listing the families for an unknown one."""
    if name not in _FAMILIES:
        raise ValueError(f"layer must be one of {', '.join(names())} (got {name!r})")
    return _FAMILIES[name]


def _frame(family: LayerFamily) -> LayerFamily | None:
    return get(family.frame) if family.frame is not None else None


def options(name: str) -> dict[str, object]:
    """The options family `name` takes (its own and its frame's), with their defaults."""
    family = get(name)
    frame = _frame(family)
    return {**(frame.options if frame is not None else {}), **family.options}


def defaults() -> dict[str, object]:
    """Every family's options with their defaults (the zoo's model options include them)."""
    merged: dict[str, object] = {}
    for family in _FAMILIES.values():
        merged.update(family.options)
    return merged


def _default(key: str) -> object:
    return defaults().get(key, _NO_DEFAULT)


_NO_DEFAULT = object()


def validate(name: str, opts: Mapping[str, object]) -> dict[str, object]:
    """The options of `opts` that family `name` takes, checked; ValueError for an option it
    does not take set to a non-default value (listing those it takes), or a bad choice."""
    taken = options(name)
    refused = sorted(k for k, v in opts.items() if k not in taken and v != _default(k))
    if refused:
        listed = ", ".join(f"{k}={v!r}" for k, v in taken.items()) or "none"
        raise ValueError(
            f"layer={name!r} does not take option(s) {', '.join(refused)}; "
            f"its options (with defaults): {listed}"
        )
    chosen = {k: opts.get(k, default) for k, default in taken.items()}
    family, frame = get(name), _frame(get(name))
    for owner in (family, frame):
        for key, allowed in (owner.choices if owner is not None else {}).items():
            if chosen[key] not in allowed:
                raise ValueError(
                    f"{key} must be one of {', '.join(map(str, allowed))} (got {chosen[key]!r})"
                )
    return chosen


def _own(family: LayerFamily, opts: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in opts.items() if k in family.options}


def _builder(name: str, kind: str) -> tuple[Callable[..., nn.Module], LayerFamily]:
    family = get(name)
    built = getattr(family, kind)
    if built is None:
        family = get(family.frame)  # __post_init__ guarantees a frame here
        built = getattr(family, kind)
    return built, family


def conv(
    name: str,
    c_in: int,
    c_out: int,
    kernel_size: int = 3,
    stride: int = 1,
    input_size: tuple[int, int] = (1, 1),
    **opts: object,
) -> nn.Module:
    """A linear convolution of family `name` (or of its frame), output size ceil(n / stride)."""
    built, family = _builder(name, "conv")
    return built(c_in, c_out, kernel_size, stride, tuple(input_size), **_own(family, opts))


def linear(name: str, fan_in: int, fan_out: int, bias: bool = True, **opts: object) -> nn.Module:
    """A linear dense layer of family `name` (or of its frame)."""
    built, family = _builder(name, "linear")
    return built(fan_in, fan_out, bias, **_own(family, opts))


def _fits(family: LayerFamily, c_in: int, c_out: int) -> bool:
    return family.block_widths == "any" or c_in == c_out


def block(
    name: str,
    c_in: int,
    c_out: int,
    kernel_size: int = 3,
    input_size: tuple[int, int] = (1, 1),
    **opts: object,
) -> nn.Module | None:
    """A convolutional layer of family `name` with its own activation, or None when the family
    has none for these widths (then a conv and an activation take its place)."""
    family = get(name)
    if family.block is None or not _fits(family, c_in, c_out):
        return None
    return family.block(c_in, c_out, kernel_size, tuple(input_size), **_own(family, opts))


def dense_block(name: str, fan_in: int, fan_out: int, **opts: object) -> nn.Module | None:
    """A dense layer of family `name` with its own activation, or None (as `block`)."""
    family = get(name)
    if family.dense_block is None or not _fits(family, fan_in, fan_out):
        return None
    return family.dense_block(fan_in, fan_out, **_own(family, opts))


def resizes(name: str) -> bool:
    """Whether family `name` itself builds layers that change the width (not only its frame)."""
    family = get(name)
    own = family.conv is not None or family.linear is not None
    return own or (family.block is not None and family.block_widths == "any")


# -- the families of tradeoff.nn's own modules -------------------------------------------------


def _register_builtins() -> None:
    from .conv import AOLConv2d, SpectralConv2d, same_padding
    from .linear import AOLLinear, SpectralLinear
    from .residual import SLLConv2d, SLLLinear

    def plain_conv(c_in, c_out, kernel_size, stride, input_size):
        if stride == 1:
            return nn.Conv2d(c_in, c_out, kernel_size, padding="same")
        left, right, top, bottom = same_padding(
            input_size, (kernel_size, kernel_size), (stride, stride)
        )
        if left == right and top == bottom:
            return nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=(top, left))
        conv2d = nn.Conv2d(c_in, c_out, kernel_size, stride=stride)
        return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv2d)

    register(
        LayerFamily(
            name="spectral",
            summary="deel-lip's spectral normalisation and Björck orthonormalisation",
            conv=lambda c_in, c_out, k, s, size: SpectralConv2d(
                c_in, c_out, k, s, "same", input_size=size
            ),
            linear=lambda fan_in, fan_out, bias: SpectralLinear(fan_in, fan_out, bias=bias),
        )
    )
    register(
        LayerFamily(
            name="aol",
            summary="almost-orthogonal layers (Prach & Lampert 2022)",
            conv=lambda c_in, c_out, k, s, size, aol_side="auto": AOLConv2d(
                c_in, c_out, k, s, "same"
            ),
            linear=lambda fan_in, fan_out, bias, aol_side="auto": AOLLinear(
                fan_in, fan_out, bias=bias, side=aol_side
            ),
            options={"aol_side": "auto"},
            choices={"aol_side": AOLLinear.SIDES},
        )
    )
    register(
        LayerFamily(
            name="plain",
            summary="unconstrained nn.Conv2d and nn.Linear (no bound of 1)",
            conv=plain_conv,
            linear=lambda fan_in, fan_out, bias: nn.Linear(fan_in, fan_out, bias=bias),
        )
    )
    register(
        LayerFamily(
            name="sll",
            summary="SDP-based Lipschitz residual layers (Araujo et al. 2023), in an AOL frame",
            block=lambda c_in, c_out, k, size: SLLConv2d(c_in, kernel_size=k),
            dense_block=lambda fan_in, fan_out: SLLLinear(fan_in),
            frame="aol",
        )
    )


_register_builtins()
