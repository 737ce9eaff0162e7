"""The networks compared: `tradeoff`'s layer families, their unconstrained twin, deel-torchlip.

The unconstrained twin is the zoo's own `layer="plain", activation="relu"` model: `nn.Conv2d`
and `nn.Linear` with ReLU, and the *same* (parameter-free) pooling layers as the constrained
models, so it computes the same shapes with the same arithmetic minus the constraints.
`check_equivalent` verifies this every time the benchmark builds the models.

`plain+gs2` is the same unconstrained network with the constrained models' GroupSort2 in place
of ReLU: between the three, the table separates what the activation costs from what the weight
constraints cost.

A suffix names the accelerators a variant may use (`tradeoff.nn.native.limited_to`): `[torch]`
the plain-torch references only, `[NumPy]` also the spectral layers' eigenvalue forms with
their loops in NumPy (what an install without a C compiler runs), `[C]` also the C kernels.
A variant without a suffix uses whatever is built. Side by side in one run, they show what
each accelerator earns.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import nn as lnn
from .. import zoo

__all__ = [
    "ACCELERATOR_SUFFIXES",
    "LIPCONVNET_VARIANTS",
    "PLAIN_GS2",
    "PLAIN_MODULES",
    "SEED_CONV_VARIANTS",
    "TORCHLIP",
    "build",
    "check_equivalent",
    "split_variant",
    "torchlip_seed_conv",
    "torchlip_status",
]

TORCHLIP = "deel-torchlip"
PLAIN_GS2 = "plain+gs2"
ACCELERATOR_SUFFIXES = {"torch": "torch", "NumPy": "numpy", "C": "c"}  # [suffix] -> native's name
SEED_CONV_VARIANTS = (
    "plain",
    f"{PLAIN_GS2} [torch]",
    f"{PLAIN_GS2} [C]",
    "spectral [torch]",
    "spectral [NumPy]",
    "spectral [C]",
    "aol",
    TORCHLIP,
)
LIPCONVNET_VARIANTS = (
    "plain",
    f"{PLAIN_GS2} [torch]",
    f"{PLAIN_GS2} [C]",
    "spectral [torch]",
    "spectral [C]",
    "aol",
)
# What the unconstrained twin may contain: standard layers, parameter-free pooling and padding
# (the zoo's plain `same` convolutions on strided maps pad with nn.ZeroPad2d).
PLAIN_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ZeroPad2d,
    nn.Linear,
    nn.ReLU,
    nn.Flatten,
    lnn.ScaledL2NormPool2d,
    lnn.ScaledAvgPool2d,
    lnn.InvertibleDownsampling,
    nn.MaxPool2d,
)


def split_variant(variant: str) -> tuple[str, str | None]:
    """("spectral", "c") for "spectral [C]": the model variant and the accelerators it may use
    (a name of `tradeoff.nn.native.ACCELERATORS`), None for a variant without a suffix."""
    base, _, suffix = variant.partition(" [")
    if not suffix:
        return variant, None
    accelerator = ACCELERATOR_SUFFIXES.get(suffix.rstrip("]"))
    if accelerator is None or not suffix.endswith("]"):
        raise ValueError(
            f"unknown accelerator in variant {variant!r}; suffixes: "
            + ", ".join(f"[{k}]" for k in ACCELERATOR_SUFFIXES)
        )
    return base, accelerator


def torchlip_status() -> tuple[bool, str]:
    """(importable, version or the reason it is not), without failing the benchmark."""
    try:
        import deel.torchlip  # noqa: F401
    except ImportError as exc:
        return False, (
            f"not installed ({exc}); `pip install deel-torchlip --no-deps` "
            "or the `bench` extra adds it"
        )
    except Exception as exc:  # a broken install, e.g. an incompatible torch
        return False, f"not importable with torch {torch.__version__}: {type(exc).__name__}: {exc}"
    try:
        return True, importlib.metadata.version("deel-torchlip")
    except importlib.metadata.PackageNotFoundError:
        return True, "unknown version"


def torchlip_seed_conv(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    filters: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> nn.Module:
    """deel-torchlip's build of the seed model, layer for layer as in its documentation.

    SpectralConv2d (3×3, `same`) → GroupSort2 → ScaledL2NormPool2d(2), twice, then Flatten →
    SpectralLinear → GroupSort2 → SpectralLinear without bias, in a `torchlip.Sequential`.
    """
    from deel import torchlip

    c, h, w = (int(s) for s in input_shape)
    layers: list[nn.Module] = []
    for f in filters:
        layers += [
            torchlip.SpectralConv2d(c, f, 3, padding="same"),
            torchlip.GroupSort2(),
            torchlip.ScaledL2NormPool2d(2),
        ]
        c, h, w = f, h // 2, w // 2
    layers += [
        nn.Flatten(),
        torchlip.SpectralLinear(c * h * w, hidden),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(hidden, num_classes, bias=False),
    ]
    with warnings.catch_warnings():  # it warns that Flatten is not one of its own layers
        warnings.simplefilter("ignore")
        return torchlip.Sequential(*layers)


def build(model: str, variant: str, input_shape: Sequence[int], **options: object) -> nn.Module:
    """Model `model` ("seed_conv" or "lipconvnet") in `variant` (a layer family, "plain" or
    deel-torchlip, with or without an accelerator suffix), on CPU; `options` are zoo options
    (width, depth, ...)."""
    variant = split_variant(variant)[0]
    if variant == TORCHLIP:
        if model != "seed_conv":
            raise ValueError(f"no deel-torchlip build of {model!r}")
        return torchlip_seed_conv(input_shape, **options)
    if variant in ("plain", PLAIN_GS2):
        activation = "relu" if variant == "plain" else "groupsort2"
        return zoo.create(
            model, input_shape=input_shape, layer="plain", activation=activation, **options
        )
    return zoo.create(model, input_shape=input_shape, layer=variant, **options)


def _output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape of each child, padding layers aside: a plain convolution's explicit
    `nn.ZeroPad2d` is part of the padding a constrained convolution applies itself."""
    shapes: list[tuple[int, ...]] = []
    with torch.no_grad():
        for layer in model.children():
            x = layer(x)
            if not isinstance(layer, nn.ZeroPad2d):
                shapes.append(tuple(x.shape))
    return shapes


def check_equivalent(plain: nn.Module, others: dict[str, nn.Module], x: torch.Tensor) -> str:
    """Check `plain` is an unconstrained twin of each of `others`, and say what was checked.

    Twin: only `PLAIN_MODULES`, no parametrizations, and the same output shape after every
    layer as each other model (so the same convolutions, pooling and dense sizes). Raises
    `AssertionError` otherwise — the benchmark's ratios would be meaningless.
    """
    alien = sorted({type(m).__name__ for m in plain.children() if not isinstance(m, PLAIN_MODULES)})
    if alien or any("parametrizations" in name for name, _ in plain.named_modules()):
        raise AssertionError(f"the unconstrained model has non-standard layers: {alien}")
    reference = _output_shapes(plain, x)
    for name, model in others.items():
        shapes = _output_shapes(model, x)
        if shapes != reference:
            raise AssertionError(
                f"{name} does not match the unconstrained model layer for layer:\n"
                f"  plain: {reference}\n  {name}: {shapes}"
            )
    kinds = sorted({type(m).__name__ for m in plain.children()})
    return (
        f"plain = {', '.join(kinds)}; same {len(reference)} layer output shapes as "
        f"{', '.join(others)}"
    )


def each_variant(
    model: str, variants: Sequence[str], input_shape: Sequence[int], seed: int, **options: object
) -> dict[str, Callable[[], nn.Module]]:
    """Factories of fresh, identically seeded instances of each variant."""

    def factory(variant: str) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(seed)
            return build(model, variant, input_shape, **options)

        return make

    return {v: factory(v) for v in variants}
