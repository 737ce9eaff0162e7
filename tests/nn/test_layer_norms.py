"""Every layer's Lipschitz constant, measured independently through autograd, against 1 and
against the bound `tradeoff.certificates.lipschitz_bound` reports."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from lipschitz_measure import measured_linear_norm, measured_lipschitz
from torch import nn

from tradeoff import nn as lnn
from tradeoff.certificates import lipschitz_bound

BJORCK_TOL = 1e-3  # Björck stops at a tolerance
AOL_TOL = 1e-5


def _randomize(layer: nn.Module, seed: int = 0) -> nn.Module:
    """Replace every free parameter by Gaussian noise: the constraint must hold for any value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return layer


def _bound_of(layer: nn.Module, shape: tuple[int, ...]) -> float:
    return lipschitz_bound(nn.Sequential(layer), shape)


def _covers(bound: float, measured: float) -> bool:
    """The bound is at least the measurement, up to float64 rounding of the measurement."""
    return bound >= measured * (1 - 1e-12)


LINEAR_SHAPES = [(20, 50), (50, 20), (64, 64), (1568, 64), (64, 10)]


@pytest.mark.parametrize("fan_in,fan_out", LINEAR_SHAPES)
@pytest.mark.parametrize("randomize", [False, True])
def test_spectral_linear_norm(fan_in, fan_out, randomize):
    layer = lnn.SpectralLinear(fan_in, fan_out)
    if randomize:
        _randomize(layer)
    norm = measured_linear_norm(layer, (fan_in,))
    assert norm <= 1 + BJORCK_TOL
    assert _covers(_bound_of(layer, (fan_in,)), norm)


@pytest.mark.parametrize("fan_in,fan_out", LINEAR_SHAPES)
@pytest.mark.parametrize("side", ["input", "output", "auto"])
def test_aol_linear_norm(fan_in, fan_out, side):
    layer = _randomize(lnn.AOLLinear(fan_in, fan_out, side=side))
    norm = measured_linear_norm(layer, (fan_in,))
    assert norm <= 1 + AOL_TOL
    assert _covers(_bound_of(layer, (fan_in,)), norm)


CONV_CASES = [
    # (in, out, kernel, stride, padding, size)
    (1, 16, 3, 1, "same", (28, 28)),
    (16, 32, 3, 1, "same", (14, 14)),
    (8, 4, 3, 1, "same", (9, 11)),
    (4, 8, 3, 2, "same", (28, 28)),
    (4, 8, 3, 2, "same", (13, 13)),
    (3, 6, 5, 1, "valid", (12, 12)),
    (6, 6, 3, 2, "valid", (11, 12)),
    (2, 4, 1, 1, "same", (8, 8)),
]


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,size", CONV_CASES)
@pytest.mark.parametrize("randomize", [False, True])
def test_spectral_conv_norm(c_in, c_out, k, stride, padding, size, randomize):
    layer = lnn.SpectralConv2d(c_in, c_out, k, stride, padding, input_size=size)
    if randomize:
        _randomize(layer)
    shape = (c_in, *size)
    norm = measured_linear_norm(layer, shape)
    assert norm <= 1 + BJORCK_TOL
    assert _covers(_bound_of(layer, shape), norm)


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,size", CONV_CASES)
def test_aol_conv_norm(c_in, c_out, k, stride, padding, size):
    layer = _randomize(lnn.AOLConv2d(c_in, c_out, k, stride, padding))
    shape = (c_in, *size)
    norm = measured_linear_norm(layer, shape)
    assert norm <= 1 + AOL_TOL
    assert _covers(_bound_of(layer, shape), norm)


def test_deel_coefficient_alone_can_exceed_one_and_the_bound_sees_it():
    """deel-lip's coefficient is an average over borders: a grey-image first layer exceeds 1.

    With `exact_cap=False` (deel-lip as it is) the layer is 1.02-Lipschitz at 28×28; the bound
    must report that, not an assumed 1.
    """
    layer = lnn.SpectralConv2d(1, 16, 3, input_size=(28, 28), exact_cap=False)
    norm = measured_linear_norm(layer, (1, 28, 28))
    assert norm > 1.01
    assert _covers(_bound_of(layer, (1, 28, 28)), norm)


PLAIN_CONVS = [
    dict(padding=1),
    dict(padding="same"),
    dict(padding=0),
    dict(padding=2, stride=2),
    dict(padding=1, stride=(2, 1)),
    dict(padding=2, dilation=2),
    dict(padding=1, groups=2),
    dict(padding=1, padding_mode="circular"),
]


@pytest.mark.parametrize("kwargs", PLAIN_CONVS)
def test_conv_operator_bound_is_sound_and_tight(kwargs):
    """Unconstrained convolutions: the FFT bound is above the measured norm and close to it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **kwargs)
    shape = (4, 10, 12)
    norm = measured_linear_norm(conv, shape, iters=500)
    bound = _bound_of(conv, shape)
    assert bound >= norm
    if kwargs.get("padding_mode") == "circular":
        assert bound == pytest.approx(norm, rel=1e-4)
    else:
        assert bound <= 1.15 * norm


@pytest.mark.parametrize(
    ("size", "stride", "padding_mode"),
    [
        ((7, 9), (1, 1), "circular"),
        ((8, 10), (2, 2), "circular"),
        ((6, 9), (2, 1), "circular"),
        ((7, 9), (1, 1), "zeros"),
        ((9, 8), (2, 2), "zeros"),
    ],
)
def test_conv_operator_norm_against_the_dense_matrix(size, stride, padding_mode):
    """The FFT formula (half the spectrum, Gram eigenvalues) against the SVD of the operator's
    dense matrix: equal for circular padding, an upper bound for zero padding."""
    from tradeoff.nn.operator_norm import conv2d_operator_norm

    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=1, padding_mode=padding_mode, bias=False)
    conv = conv.double()
    n = 3 * size[0] * size[1]
    dense = torch.func.jacrev(lambda v: conv(v.view(1, 3, *size)).flatten())(
        torch.zeros(n, dtype=torch.float64)
    )
    exact = float(torch.linalg.matrix_norm(dense.detach(), ord=2))
    circular = padding_mode == "circular"
    bound = conv2d_operator_norm(conv.weight, size, stride, (2, 2), circular=circular)
    assert bound >= exact
    assert bound <= exact * (1 + 2e-6) if circular else bound <= 1.15 * exact


def test_conv_transpose_bound():
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(5, 3, 3, padding=1, bias=False)
    norm = measured_linear_norm(conv, (5, 9, 9))
    assert _covers(_bound_of(conv, (5, 9, 9)), norm)


ACTIVATIONS = [
    (lnn.GroupSort2(), (8, 5, 5)),
    (lnn.GroupSort(4), (8, 3, 3)),
    (lnn.GroupSort(2), (12,)),
    (lnn.FullSort(), (6, 4, 4)),
    (lnn.MaxMin(), (8, 4, 4)),
    (lnn.MaxMin(), (10,)),
    (_randomize(lnn.Householder(8)), (8, 4, 4)),
    (_randomize(lnn.Householder(6), seed=3), (6,)),
    (lnn.Abs(), (7,)),
]


@pytest.mark.parametrize("layer,shape", ACTIVATIONS, ids=lambda v: type(v).__name__)
def test_activation_is_one_lipschitz(layer, shape):
    measured = measured_lipschitz(layer, shape)
    assert measured <= 1 + 1e-9
    assert measured >= 1 - 1e-6  # gradient-norm preserving: the constant is attained
    assert _covers(_bound_of(layer, shape), measured)


def test_householder_default_equals_sorted_pairs():
    x = torch.randn(5, 8)
    h = lnn.Householder(8)
    a, b = x.chunk(2, dim=1)
    expected = torch.cat((torch.minimum(a, b), torch.maximum(a, b)), dim=1)
    torch.testing.assert_close(h(x), expected)


POOLS = [
    (lnn.ScaledL2NormPool2d(2), (3, 8, 8), 1.0),
    (lnn.ScaledL2NormPool2d(2), (3, 7, 9), 1.0),
    (lnn.ScaledL2NormPool2d(3, stride=1), (2, 6, 6), 3.0),
    (lnn.ScaledAvgPool2d(2), (3, 8, 8), 1.0),
    (lnn.ScaledAvgPool2d(2, stride=1), (2, 6, 6), 2.0),
    (lnn.ScaledGlobalAvgPool2d(), (3, 5, 7), 1.0),
    (lnn.InvertibleDownsampling(2), (3, 8, 8), 1.0),
    (nn.MaxPool2d(2), (3, 8, 8), 1.0),
    (nn.MaxPool2d(3, stride=2), (2, 9, 9), 2.0),
    (nn.AvgPool2d(2), (3, 8, 8), 0.5),
]


@pytest.mark.parametrize("layer,shape,expected", POOLS, ids=lambda v: type(v).__name__)
def test_pooling_bounds(layer, shape, expected):
    measured = measured_lipschitz(layer, shape)
    bound = _bound_of(layer, shape)
    assert bound == pytest.approx(expected, rel=2e-6)  # computed norms carry REL_SLACK
    assert measured <= bound * (1 + 1e-9)
    if expected == 1.0:
        assert measured >= 1 - 1e-6


@pytest.mark.parametrize(
    "layer,shape",
    [
        (lnn.SLLLinear(12), (12,)),
        (lnn.SLLLinear(10, 24), (10,)),
        (lnn.SLLConv2d(4), (4, 8, 8)),
        (lnn.SLLConv2d(3, 8, kernel_size=5), (3, 7, 9)),
    ],
    ids=lambda v: type(v).__name__,
)
@pytest.mark.parametrize("randomize", [False, True])
def test_sll_residual_is_one_lipschitz(layer, shape, randomize):
    if randomize:
        _randomize(layer, seed=7)
    measured = measured_lipschitz(layer, shape)
    assert measured <= 1 + 1e-6
    bound = _bound_of(layer, shape)
    assert _covers(bound, measured)
    assert bound <= 1 + 1e-4


def test_sll_bound_detects_a_too_large_scaling():
    """If T⁻¹ is larger than the theorem allows, the bound must grow beyond 1. (A subclass
    must vouch for its bound with its own `lipschitz_bound`: here SLL's, which reads the
    scaling the layer uses.)"""

    class Loose(lnn.SLLLinear):
        def scaling(self, weight=None):
            base = super().scaling(weight)
            return base * 1.5 if weight is None else base

        def lipschitz_bound(self, input_shape):
            return super().lipschitz_bound(input_shape)

    layer = Loose(8)
    assert _bound_of(layer, (8,)) == pytest.approx(2.0, rel=1e-4)
    assert measured_lipschitz(layer, (8,)) <= _bound_of(layer, (8,))


def test_sll_scaling_matches_the_paper_formula():
    layer = _randomize(lnn.SLLLinear(5, 4), seed=2)
    w, q = layer.weight.detach(), torch.exp(layer.log_q.detach())
    gram = (w @ w.t()).abs()
    expected = [
        1 / sum(float(gram[i, j]) * float(q[j]) / float(q[i]) for j in range(4)) for i in range(4)
    ]
    torch.testing.assert_close(layer.scaling().detach(), torch.tensor(expected), rtol=1e-5, atol=0)
    assert all(math.isfinite(v) for v in expected)


@pytest.mark.parametrize("c_in,c_out,size", [(1, 16, (28, 28)), (16, 32, (14, 14))])
def test_spectral_conv_cap_matches_an_exact_cap_every_step(c_in, c_out, size):
    """The cap, recomputed only when a drift bound cannot rule it out, gives the same weights
    as computing the exact operator norm at every step."""
    torch.manual_seed(0)
    layer = lnn.SpectralConv2d(c_in, c_out, 3, input_size=size)
    param = layer.parametrizations.weight[0]
    original = layer.parametrizations.weight.original
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    x = torch.rand(8, c_in, *size)
    for _ in range(12):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            u = param.u.clone()
            cached = param.compute(original)
            param.u.copy_(u)
            param._norm_ref, param._exact_norm = None, None  # exact, from every block
            exact = param.compute(original)
        torch.testing.assert_close(cached, exact, rtol=0, atol=0)
        assert measured_linear_norm(copy.deepcopy(layer), (c_in, *size), iters=60) <= 1 + BJORCK_TOL


@pytest.mark.parametrize(
    "c_in,c_out,size,stride", [(64, 64, (4, 4), (1, 1)), (16, 32, (8, 8), (2, 2))]
)
def test_tracked_conv_norm_equals_the_norm_from_every_block(c_in, c_out, size, stride):
    """Pruned by per-block drift bounds, the norm is still the exact one, step after step;
    small steps skip most blocks, a jump recomputes them all."""
    from tradeoff.nn.operator_norm import TrackedConvNorm, conv2d_operator_norm

    gen = torch.Generator().manual_seed(c_in + c_out)
    kernel = torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64)
    tracker = TrackedConvNorm(size, stride, (2, 2))
    pruned_steps = 0
    for step in range(30):
        size_of_step = 1.0 if step in (10, 20) else 1e-3  # two jumps
        kernel = kernel + size_of_step * torch.randn(
            kernel.shape, generator=gen, dtype=kernel.dtype
        )
        seen, computed = tracker.blocks_seen, tracker.blocks_computed
        exact = conv2d_operator_norm(kernel, size, stride, (2, 2))
        # Asked to skip when the block bounds show the norm below 0.999 of the true one, the
        # tracker must not: its bounds are never below the norm.
        norm = tracker(kernel, at_most=0.999 * exact)
        assert norm == pytest.approx(exact, rel=1e-12)
        if step > 0:  # and above it, the same bounds are tight enough to skip at 1.5×
            seen_before = tracker.blocks_seen
            assert tracker(kernel, at_most=1.5 * exact) is None
            assert tracker.blocks_seen == seen_before
        blocks = tracker.blocks_seen - seen
        if tracker.blocks_computed - computed < blocks:
            pruned_steps += 1
        if step in (10, 20):  # a jump: every block again, and a new reference
            assert tracker.blocks_computed - computed == blocks
    assert pruned_steps >= 20


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (2, 1)])
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("loops", ["C", "torch"])
def test_frequency_block_frobenius_bounds_the_blocks_tightly(stride, circular, loops, monkeypatch):
    """The autocorrelation route to the blocks' Frobenius norms: never below the norms of the
    FFT blocks, at most 1e-10 above; in the C loops of `_spectral.c` and in torch ops."""
    from tradeoff.nn import operator_norm
    from tradeoff.nn.operator_norm import conv2d_frequency_blocks, frequency_block_frobenius

    if loops == "C" and operator_norm._spectral is None:
        pytest.skip("the C kernel tradeoff.nn._spectral is not built")
    if loops == "torch":
        monkeypatch.setattr(operator_norm, "_spectral", None)

    gen = torch.Generator().manual_seed(7)
    cases = [((4, 3, 3, 3), (7, 9)), ((8, 2, 5, 5), (4, 4)), ((5, 5, 2, 2), (3, 2))]
    for (shape, size), dtype in itertools.product(cases, (torch.float64, torch.float32)):
        w = torch.randn(shape, generator=gen, dtype=dtype)
        blocks, _ = conv2d_frequency_blocks(w.double(), size, stride, (2, 2), circular)
        exact = torch.linalg.matrix_norm(blocks)
        bound = frequency_block_frobenius(w, size, stride, (2, 2), circular)
        assert bound.shape == exact.shape and bound.dtype == torch.float64
        assert (bound >= exact).all()
        assert (bound <= exact * (1 + 1e-10) + 1e-10).all()


@pytest.mark.parametrize("loops", ["C", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tap_drift_is_the_sum_of_the_taps_frobenius_norms(loops, dtype, monkeypatch):
    """The cap's first drift bound, Σ_a ‖ΔK[:, :, a]‖_F, bounds ‖conv(ΔK)‖ (shifts are
    isometries), in C and torch."""
    from tradeoff.nn import operator_norm
    from tradeoff.nn.operator_norm import conv2d_operator_norm, tap_drift

    if loops == "C" and operator_norm._spectral is None:
        pytest.skip("the C kernel tradeoff.nn._spectral is not built")
    if loops == "torch":
        monkeypatch.setattr(operator_norm, "_spectral", None)
    gen = torch.Generator().manual_seed(9)
    kernel = torch.randn(6, 4, 3, 3, generator=gen, dtype=dtype)
    reference = kernel + 0.01 * torch.randn(6, 4, 3, 3, generator=gen, dtype=dtype)
    delta = (kernel - reference).double()
    expected = sum(
        float(torch.linalg.matrix_norm(delta[:, :, i, j])) for i in range(3) for j in range(3)
    )
    assert tap_drift(kernel, reference) == pytest.approx(
        expected, rel=1e-6 if dtype == torch.float32 else 1e-12
    )
    assert tap_drift(kernel, reference) >= conv2d_operator_norm(delta, (8, 8), (1, 1), (2, 2))


def test_tracked_conv_norm_sees_a_block_that_overtakes_the_maximum():
    """A change that makes another frequency the largest one, on a step that skips blocks."""
    from tradeoff.nn.operator_norm import (
        TrackedConvNorm,
        block_norms,
        conv2d_frequency_blocks,
        conv2d_operator_norm,
    )

    gen = torch.Generator().manual_seed(3)
    eye = torch.eye(8, dtype=torch.float64)
    kernel = torch.randn(8, 8, 3, 3, generator=gen, dtype=torch.float64) * 0.05
    kernel[:, :, 1, 1] += eye  # the zero frequency dominates
    target = kernel.clone()
    target[:, :, 1, 0] += 0.6 * eye  # a sine across the row: zero at the zero frequency
    target[:, :, 1, 2] -= 0.6 * eye
    tracker = TrackedConvNorm((6, 6), (1, 1), (2, 2))
    tracker.PRUNE_MIN_SIDE = 1  # prune these 8×8 blocks too
    tracker(kernel)
    overtaken_on_a_pruned_step = False
    for t in torch.linspace(0, 1, 21, dtype=torch.float64):
        moved = kernel + t * (target - kernel)
        computed, seen = tracker.blocks_computed, tracker.blocks_seen
        norm = tracker(moved)
        assert norm == pytest.approx(conv2d_operator_norm(moved, (6, 6), (1, 1), (2, 2)), rel=1e-12)
        largest = int(
            block_norms(conv2d_frequency_blocks(moved, (6, 6), (1, 1), (2, 2))[0]).argmax()
        )
        pruned = tracker.blocks_computed - computed < tracker.blocks_seen - seen
        overtaken_on_a_pruned_step |= largest != 0 and pruned
    assert overtaken_on_a_pruned_step


@pytest.mark.parametrize("shape", [(32, 144), (256, 2304), (7, 3), (50, 50)])
def test_gram_iteration_bounds_the_spectral_norm(shape):
    """Above the exact norm at every step count, and within rank^(1/2^(k+1)) of it."""
    from tradeoff.nn.operator_norm import gram_iteration_norm

    gen = torch.Generator().manual_seed(sum(shape))
    m = torch.randn(shape, generator=gen, dtype=torch.float64) * 1e-3
    exact = float(torch.linalg.matrix_norm(m, ord=2))
    rank = min(shape)
    for steps in (0, 1, 3, 6):
        bound = gram_iteration_norm(m, steps)
        assert exact <= bound <= exact * rank ** (1 / 2 ** (steps + 1)) * (1 + 1e-9)
    assert gram_iteration_norm(torch.zeros(shape)) == 0.0


@pytest.mark.parametrize(
    "shape, stride",
    [
        ((16, 1, 3, 3), (1, 1)),
        ((1, 8, 3, 3), (1, 1)),
        ((1, 4, 3, 3), (2, 2)),
        ((6, 1, 5, 3), (1, 1)),
    ],
)
def test_tracked_conv_norm_of_one_row_or_column_blocks_is_exact(shape, stride):
    """One input channel at stride 1, or one output channel: the blocks' Frobenius norms are
    their spectral norms, and the shortcut agrees with every block's eigenvalues."""
    from tradeoff.nn.operator_norm import TrackedConvNorm, conv2d_operator_norm

    gen = torch.Generator().manual_seed(11)
    tracker = TrackedConvNorm((28, 28), stride, (2, 2))
    for _ in range(3):
        kernel = torch.randn(shape, generator=gen, dtype=torch.float64)
        exact = conv2d_operator_norm(kernel, (28, 28), stride, (2, 2))
        norm = tracker(kernel)
        assert exact <= norm <= exact * (1 + 1e-10)
    assert tracker.blocks_computed == tracker.blocks_seen > 0
