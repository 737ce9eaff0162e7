"""Cayley layers: the transform, and the exact norm of the Fourier-domain map in use."""

from __future__ import annotations

import pytest
import torch
from lipschitz_measure import measured_linear_norm

from tradeoff.nn.cayley import (
    CayleyConv2d,
    apply_blocks,
    cayley,
    cayley_linear,
    fourier_norm,
    strided,
)
from tradeoff.rounding import PrecisionError, fft_error


@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (3, 7)])
def test_cayley_gives_orthonormal_columns_or_rows(shape):
    w = torch.randn(4, *shape, dtype=torch.complex128)
    q = cayley(w)
    small = min(shape)
    gram = q.mH @ q if shape[0] >= shape[1] else q @ q.mH
    torch.testing.assert_close(gram, torch.eye(small, dtype=gram.dtype).expand_as(gram))


def _dense_norm(fn, shape: tuple[int, ...]) -> float:
    x = torch.zeros(torch.Size(shape).numel(), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, *shape)).flatten(), x)
    return float(torch.linalg.matrix_norm(jac, ord=2))


@pytest.mark.parametrize("size", [(6, 6), (5, 7), (4, 5), (1, 3)])
def test_fourier_norm_is_the_exact_norm_of_arbitrary_blocks(size):
    """Blocks that are not Hermitian-consistent (as float32 rounding leaves them): the norm of
    the real map irfft2 computes is the one reported, to 1e-6, from its dense Jacobian."""
    gen = torch.Generator().manual_seed(0)
    count = size[0] * (size[1] // 2 + 1)
    blocks = torch.randn(count, 3, 2, 2, generator=gen, dtype=torch.float64)
    blocks = torch.view_as_complex(blocks)
    exact = _dense_norm(lambda x: apply_blocks(blocks, x), (2, *size))
    assert fourier_norm(blocks, size) == pytest.approx(exact, rel=2e-6)
    assert fourier_norm(blocks, size) >= exact


@pytest.mark.parametrize(
    "c_in,c_out,kernel,stride,size", [(3, 5, 3, 1, (6, 7)), (4, 2, 2, 2, (5, 8))]
)
def test_cayley_convolution_is_orthogonal_and_its_bound_is_its_norm(
    c_in, c_out, kernel, stride, size
):
    torch.manual_seed(0)
    layer = strided(CayleyConv2d, c_in, c_out, kernel, stride, size).double().eval()
    inner = layer if stride == 1 else layer[-1]
    with torch.no_grad():
        inner.weight.add_(torch.randn_like(inner.weight))
    measured = measured_linear_norm(layer, (c_in, *size))
    bound = inner.lipschitz_bound((inner.in_channels, *inner.input_size))
    assert bound >= measured and bound == pytest.approx(1.0, abs=1e-5)
    assert measured == pytest.approx(1.0, abs=1e-6)  # semi-orthogonal: norm 1
    out = layer(torch.randn(2, c_in, *size, dtype=torch.float64))
    assert out.shape == (2, c_out, -(-size[0] // stride), -(-size[1] // stride))


def test_cayley_conv_refuses_another_input_size():
    layer = CayleyConv2d(2, 2, 3, (6, 6))
    with pytest.raises(ValueError, match="built for 6×6 inputs"):
        layer(torch.rand(1, 2, 8, 8))


def test_cayley_linear_is_a_plain_linear_with_an_orthogonal_weight():
    layer = cayley_linear(7, 4).eval()
    assert type(layer).__bases__[0] is torch.nn.Linear
    w = layer.weight.double()
    torch.testing.assert_close(w @ w.t(), torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)


def test_fft_rounding_model_refuses_lengths_it_does_not_cover():
    assert 0 < fft_error((28, 28), 2.0**-24) < 1e-3
    assert fft_error((7,), 2.0**-24) > fft_error((8,), 2.0**-24)  # radix-7 pass costs more
    with pytest.raises(PrecisionError, match="prime factor 13"):
        fft_error((26,), 2.0**-24)
