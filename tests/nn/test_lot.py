"""LOT convolutions (Newton–Schulz in the Fourier domain): the map they compute, measured
independently in float64 against the bound they report, with few iterations and many."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from lipschitz_measure import jacobian_norm, measured_linear_norm
from test_soc import rounding_within_bound
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.bounds import layer_bounds
from tradeoff.certificates import lipschitz_bound
from tradeoff.export import export_vanilla
from tradeoff.nn.lot import (
    LOTConv2d,
    circular_apply,
    fast_length,
    kernel_spectrum,
    lot_conv,
    lot_linear,
    polar_newton,
)


class ExactLOT(nn.Module):
    """The map an eval-mode `LOTConv2d` stands for on inputs of one shape, with the frequency
    matrices it uses (complex64 values, exact in complex128): zero padding onto the grid, full
    complex FFT of the real input, the matrices on one half of the spectrum and their mirror
    image's conjugate on the other (what irfft2 reads), inverse FFT, real part, crop."""

    def __init__(self, layer: LOTConv2d, shape: tuple[int, ...]) -> None:
        super().__init__()
        size = (-(-shape[-2] // layer.stride), -(-shape[-1] // layer.stride))
        self.grid, self.pad, self.stride = layer.grid(size), layer.kernel_size // 2, layer.stride
        self.register_buffer("spectrum", layer.spectrum_in_use(shape).clone())
        self.register_buffer("bias", layer.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p, (g_h, g_w) = self.stride, self.pad, self.grid
        if s > 1:
            x = F.pixel_unshuffle(F.pad(x, (0, -x.shape[-1] % s, 0, -x.shape[-2] % s)), s)
        n_h, n_w = x.shape[-2:]
        x = F.pad(x, (p, g_w - n_w - p, p, g_h - n_h - p))
        half = self.spectrum.to(torch.complex128)  # (g_h, g_w // 2 + 1, out, in)
        full = torch.zeros(g_h, g_w, *half.shape[2:], dtype=torch.complex128)
        rows = (-torch.arange(g_h)) % g_h
        for col in range(g_w):
            if col < half.shape[1]:
                full[:, col] = half[:, col]
            else:
                full[:, col] = half[rows, g_w - col].conj()
        freq = torch.fft.fft2(x.to(torch.complex128)).permute(2, 3, 1, 0)
        y = torch.fft.ifft2((full @ freq).permute(3, 2, 0, 1)).real
        return y[..., p : p + n_h, p : p + n_w] + self.bias.view(1, -1, 1, 1)


def _randomized(layer: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return layer


CASES = [
    # (in, out, kernel, stride, shape, iterations)
    (4, 4, 3, 1, (4, 7, 9), 10),
    (3, 5, 3, 1, (3, 6, 6), 10),
    (6, 3, 5, 1, (6, 5, 7), 10),
    (2, 6, 3, 2, (2, 7, 9), 10),
    (4, 4, 1, 1, (4, 3, 3), 10),
    (4, 4, 3, 1, (4, 6, 6), 1),  # one step: far from orthogonal
    (4, 4, 3, 1, (4, 6, 6), 0),
    (3, 3, 3, 1, (3, 8, 8), 3),
]


@pytest.mark.parametrize("c_in,c_out,k,s,shape,iterations", CASES)
def test_norm_measured_in_float64_never_exceeds_the_bound(c_in, c_out, k, s, shape, iterations):
    torch.manual_seed(0)
    layer = _randomized(LOTConv2d(c_in, c_out, k, s, iterations=iterations)).eval()
    bound = lipschitz_bound(nn.Sequential(layer).eval(), shape)
    assert bound == layer.lipschitz_bound(shape)
    exact = ExactLOT(layer, shape)
    dense = jacobian_norm(exact, shape, points=1)
    power = measured_linear_norm(copy.deepcopy(exact), shape)
    assert dense <= bound and power <= bound, (dense, power, bound)
    assert bound <= dense * 1.05 + 1e-3
    if iterations >= 10:
        assert dense >= 0.99
    spectrum = layer.spectrum_in_use(shape).to(torch.complex128)
    singular = torch.linalg.svdvals(spectrum)
    if iterations <= 1:  # the iteration error shows: far from orthogonal, never above 1
        assert float(singular.min()) < 0.9 and float(singular.max()) <= 1 + 1e-5


def test_the_float32_layer_computes_the_exact_map_it_is_bounded_for():
    torch.manual_seed(0)
    layer = _randomized(LOTConv2d(3, 5, 3, 2)).eval()
    x = torch.randn(4, 3, 9, 8)
    exact = ExactLOT(layer, (3, 9, 8)).double()
    with torch.no_grad():
        torch.testing.assert_close(layer(x).double(), exact(x.double()), atol=1e-5, rtol=1e-5)


def test_the_frequency_matrices_are_those_of_the_zero_padded_convolution():
    """Without the polar factor, the pipeline is F.conv2d with `same` zero padding."""
    gen = torch.Generator().manual_seed(0)
    kernel = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    grid = (fast_length(9), fast_length(11))
    assert grid == (9, 12)
    y = circular_apply(x, kernel_spectrum(kernel, grid), 1, grid)
    torch.testing.assert_close(y, F.conv2d(x, kernel, padding=1))


def test_fast_lengths_have_no_prime_factor_above_five():
    assert [fast_length(n) for n in (1, 7, 10, 11, 13, 14, 34, 49)] == [
        1,
        8,
        10,
        12,
        15,
        15,
        36,
        50,
    ]


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (6, 6)])
def test_polar_newton_converges_and_stays_below_one(shape):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, *shape, generator=gen, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    singular = torch.linspace(0.2, 3.0, min(shape), dtype=torch.float64)
    w = u @ torch.diag_embed(singular) @ vh  # condition number 15: converged in 30 steps
    polar = polar_newton(w, 30)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(polar, u @ vh, atol=2e-3, rtol=0)  # the 1e-4 regularisation
    for steps in range(6):
        assert float(torch.linalg.svdvals(polar_newton(w, steps)).max()) <= 1 + 1e-12


def test_dense_and_kernel_equals_stride_layers_are_standard_layers_bounded_exactly():
    torch.manual_seed(0)
    dense = lot_linear(20, 7)
    assert type(dense).__bases__[0] is nn.Linear
    w = dense.weight.detach().double()
    torch.testing.assert_close(w @ w.t(), torch.eye(7, dtype=torch.float64), atol=1e-3, rtol=0)
    down = lot_conv(3, 6, 2, 2, (7, 9))
    model = nn.Sequential(*down)
    assert measured_linear_norm(model, (3, 7, 9)) <= lipschitz_bound(model, (3, 7, 9)) <= 1


def test_export_gives_plain_layers_with_the_same_outputs():
    torch.manual_seed(0)
    model = zoo.create("convnet", input_shape=(3, 7, 9), num_classes=5, layer="lot", width=4)
    _randomized(model)
    model.eval()
    plain = export_vanilla(model)
    x = torch.rand(16, 3, 7, 9)
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)
    kinds = {type(m) for m in plain.modules() if not isinstance(m, nn.Sequential)}
    assert kinds <= {nn.Conv2d, nn.Linear, nn.ZeroPad2d, nn.PixelUnshuffle, nn.Flatten, lnn.MaxMin}
    assert lipschitz_bound(plain, (3, 7, 9)) <= lipschitz_bound(model) * (1 + 1e-5)
    strided = _randomized(LOTConv2d(2, 3, 3, 2)).eval()
    torch.testing.assert_close(
        strided.vanilla_export((2, 5, 5))(x[:, :2, :5, :5]), strided(x[:, :2, :5, :5])
    )


def test_every_layer_of_a_lot_convnet_measures_within_its_bound():
    torch.manual_seed(0)
    model = _randomized(
        zoo.create("convnet", input_shape=(1, 8, 8), num_classes=5, layer="lot", width=2)
    )
    for row in layer_bounds(model):
        module = row.module
        if isinstance(module, LOTConv2d):
            module = ExactLOT(module, row.input_shape)
        measured = jacobian_norm(module, row.input_shape, points=1)
        assert measured <= row.bound, (row.name, measured, row.bound)


def test_the_spectrum_follows_the_input_size_and_is_cached_in_eval():
    layer = LOTConv2d(2, 2).eval()
    with torch.no_grad():
        assert layer(torch.rand(1, 2, 8, 8)).shape == (1, 2, 8, 8)
        first = layer.spectrum((8, 8))
        assert layer.spectrum((8, 8)) is first
        assert layer(torch.rand(1, 2, 5, 7)).shape == (1, 2, 5, 7)
        assert layer.spectrum((5, 7)).shape[:2] == (fast_length(7), fast_length(9) // 2 + 1)


def test_the_rounding_bound_covers_float32_against_the_exact_map():
    torch.manual_seed(0)
    layer = _randomized(LOTConv2d(3, 4, 3, 2)).eval()
    shape = (3, 13, 8)  # grids 9 and 6: radix-3 and radix-2 passes
    rounding_within_bound(layer, ExactLOT(layer, shape), shape)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kernel_size": 2}, "odd kernel_size"),
        ({"iterations": -1}, "iterations must be an integer >= 0"),
        ({"iterations": 2.0}, "iterations must be an integer >= 0"),
        ({"stride": 0}, "channels and stride must be >= 1"),
    ],
)
def test_bad_options_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LOTConv2d(3, 3, **kwargs)


def test_the_zoo_option_sets_the_iterations():
    model = zoo.create("convnet", input_shape=(1, 8, 8), layer="lot", width=2, lot_iterations=4)
    assert {m.iterations for m in model if isinstance(m, LOTConv2d)} == {4}
