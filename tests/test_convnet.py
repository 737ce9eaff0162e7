"""The zoo's `convnet` (the comparison study's ConvNet XS/S/M/L): its shape, its options, and
every layer's Lipschitz constant measured independently against the bound it reports."""

from __future__ import annotations

import copy

import pytest
import torch
from lipschitz_measure import measured_linear_norm, measured_lipschitz
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.bounds import layer_bounds
from tradeoff.certificates import lipschitz_bound
from tradeoff.cost import parameter_count

FAMILIES = ("spectral", "aol", "plain", "sll", "cpl", "sandwich", "cayley")
# How far above 1 a constrained layer may measure: Björck stops at a tolerance; the Cayley
# transform is computed in float32.
TOLERANCE = {
    "spectral": 1e-3,
    "aol": 1e-5,
    "sll": 1e-5,
    "cpl": 1e-5,
    "sandwich": 1e-4,
    "cayley": 1e-4,
}


def _kinds(model: nn.Module) -> list[str]:
    return [type(m).__name__.replace("Parametrized", "") for m in model]


def test_convnet_xs_on_cifar_shapes():
    model = zoo.create("convnet", input_shape=(3, 32, 32), num_classes=10, layer="plain")
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].kernel_size) == (3, 16, (1, 1))
    downs = [m for m in convs if m.stride == (2, 2)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in downs] == [
        (16 * 2**b, 32 * 2**b, (2, 2)) for b in range(5)
    ]
    blocks = [m for m in convs if m.kernel_size == (3, 3)]
    assert [m.out_channels for m in blocks] == [16 * 2**b for b in range(5) for _ in range(5)]
    assert sum(isinstance(m, lnn.MaxMin) for m in model) == 25
    head = model[-1]
    assert (head.in_features, head.out_features, head.bias) == (512, 10, None)
    c = [16 * 2**b for b in range(5)]
    expected = (3 * 16 + 16) + sum(5 * (9 * w * w + w) + (4 * w * 2 * w + 2 * w) for w in c)
    assert parameter_count(model) == expected + 512 * 10
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("size,width", sorted(zoo.CONVNET_WIDTHS.items()))
def test_sizes_set_the_base_width(size, width):
    model = zoo.create("convnet", input_shape=(1, 8, 8), size=size, layer="plain", depth=1)
    assert model[0].out_channels == width
    assert model[-1].in_features == width * 2**3  # three halvings bring 8×8 to 1×1


@pytest.mark.parametrize("shape,blocks", [((3, 32, 32), 5), ((1, 28, 28), 5), ((1, 8, 8), 3)])
def test_blocks_bring_the_map_to_one_pixel(shape, blocks):
    model = zoo.create("convnet", input_shape=shape, layer="plain", width=2, depth=1)
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in model) == blocks
    assert model[-1].in_features == 2 * 2**blocks
    with pytest.raises(ValueError, match=f"at most {blocks} blocks"):
        zoo.create("convnet", input_shape=shape, width=2, blocks=blocks + 1)


def test_bad_options_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match="size must be one of xs, s, m, l"):
        zoo.create("convnet", size="xl")
    with pytest.raises(ValueError, match="layer must be one of spectral, aol, plain, sll"):
        zoo.create("convnet", layer="orthogonal")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        zoo.create("convnet", depth=0)


@pytest.mark.parametrize(
    "layer,block,frame",
    [
        ("sll", "SLLConv2d", {"AOLConv2d", "AOLLinear"}),
        ("cpl", "CPLConv2d", {"AOLConv2d", "AOLLinear"}),
        ("sandwich", "SandwichConv2d", {"CayleyConv2d", "InvertibleDownsampling", "Linear"}),
    ],
)
def test_blocks_that_carry_their_activation_sit_in_their_frame(layer, block, frame):
    model = zoo.create("convnet", input_shape=(1, 8, 8), layer=layer, width=4, depth=2)
    kinds = _kinds(model)
    assert kinds.count(block) == 6 and "MaxMin" not in kinds
    assert {k for k in kinds if k not in (block, "Flatten")} == frame


def test_cayley_convnet_is_orthogonal_convolutions_and_a_cayley_head():
    model = zoo.create("convnet", input_shape=(1, 7, 9), layer="cayley", width=4, depth=1)
    kinds = _kinds(model)
    assert kinds.count("CayleyConv2d") == 1 + 4 + 4  # stem, a 3×3 and a halving per block
    assert kinds.count("InvertibleDownsampling") == 4 and kinds.count("ZeroPad2d") == 4
    assert kinds[-1] == "Linear" and lipschitz_bound(model) == pytest.approx(1.0, abs=1e-4)


def _randomized(layer: str, shape: tuple[int, int, int]) -> nn.Module:
    """A small convnet whose free parameters are Gaussian noise: the bound must hold anyway."""
    torch.manual_seed(0)
    model = zoo.create("convnet", input_shape=shape, num_classes=5, layer=layer, width=2, depth=1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _measured(module: nn.Module, shape: tuple[int, ...]) -> float:
    module = copy.deepcopy(module)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return measured_linear_norm(module, shape)
    return measured_lipschitz(module, shape, points=4, iters=40)


# Odd maps exercise the halving's one-sided padding; `sll` has the AOL frame that `aol` tests
# there (its residual layers are measured on odd maps in tests/nn/test_layer_norms.py).
NORM_CASES = [
    *[(layer, (1, 8, 8)) for layer in FAMILIES],
    *[(layer, (3, 7, 9)) for layer in FAMILIES if layer != "sll"],
]
# Measuring the newer families' layers (Fourier blocks, residual steps) takes 10-60 s each.
NORM_CASES = [
    pytest.param(*case, marks=pytest.mark.slow)
    if case[0] in ("cpl", "sandwich", "cayley")
    else case
    for case in NORM_CASES
]


@pytest.mark.parametrize("layer,shape", NORM_CASES)
def test_every_layer_measures_within_its_bound(layer, shape):
    model = _randomized(layer, shape)
    rows = layer_bounds(model)
    assert len(rows) == len(model)
    for row in rows:
        measured = _measured(row.module, row.input_shape)
        assert row.bound >= measured * (1 - 1e-12), (row.name, row.bound, measured)
        if layer in TOLERANCE:
            assert measured <= 1 + TOLERANCE[layer], (row.name, measured)
    whole = measured_lipschitz(copy.deepcopy(model), shape, points=4, iters=40)
    assert lipschitz_bound(model) >= whole * (1 - 1e-12)
