"""Small spectral weights take their whole map in C (`_spectral.c`): the same values and
gradients as the torch path."""

from __future__ import annotations

import pytest
import torch

from tradeoff.nn import bjorck, native, spectral_bjorck

pytestmark = pytest.mark.skipif(
    native.spectral() is None, reason="the C kernel tradeoff.nn._spectral is not built"
)


def _matrix(shape: tuple[int, int], condition: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(shape, generator=gen), full_matrices=False)
    s = torch.logspace(0, -condition, min(shape))
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize(
    "shape", [(16, 9), (9, 16), (10, 64), (64, 10), (32, 144), (3, 3), (1, 20)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_weights_in_c_match_the_torch_path(shape, dtype, monkeypatch):
    """The C path (whole map and its gradient in float64 loops) against the torch products, on
    full-rank and rank-deficient weights."""
    gen = torch.Generator().manual_seed(sum(shape))
    small, calls = bjorck._small_forward, []
    monkeypatch.setattr(bjorck, "_small_forward", lambda *a: calls.append(a) or small(*a))
    for rank in {min(shape), max(min(shape) - 2, 1)}:
        w = (_matrix(shape, 2.0, seed=rank) * 3).to(dtype)
        if rank < min(shape):  # drop singular values: ties at zero in the Gram matrix
            u_, s_, vh_ = torch.linalg.svd(w.double(), full_matrices=False)
            w = (u_[:, :rank] * s_[:rank] @ vh_[:rank]).to(dtype)
        u = torch.nn.functional.normalize(torch.randn(shape[0], generator=gen, dtype=dtype), dim=0)
        grad_out = torch.randn(shape, generator=gen, dtype=dtype)
        results = []
        for small_max_side in (bjorck.SMALL_MAX_SIDE, 0):
            monkeypatch.setattr(bjorck, "SMALL_MAX_SIDE", small_max_side)
            x = w.clone().requires_grad_()
            out, new_u = spectral_bjorck(x, u)
            (grad,) = torch.autograd.grad(out, x, grad_out)
            results.append((out.detach(), new_u, grad))
        (out_c, u_c, grad_c), (out_t, u_t, grad_t) = results
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(out_c, out_t, atol=tol, rtol=0)
        torch.testing.assert_close(u_c, u_t, atol=tol, rtol=0)
        assert (grad_c - grad_t).norm() <= 1e4 * tol * grad_t.norm()
        assert out_c.dtype == dtype and grad_c.dtype == dtype
    assert calls


@pytest.mark.parametrize("shape", [(16, 1, 3, 3), (32, 16, 3, 3), (10, 64), (64, 10)])
def test_kernels_take_the_lean_function_with_their_own_shape(shape, monkeypatch):
    """spectral_bjorck takes a small kernel whole (no reshape): the same values, gradient and
    forward-mode derivative as the matrix (out, rest) through the general function."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    u = torch.nn.functional.normalize(
        torch.randn(shape[0], generator=gen, dtype=torch.float64), dim=0
    )
    grad_out, tangent = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2))
    forward, calls = bjorck._SmallSpectral.forward, []
    spy = staticmethod(lambda *a: calls.append(1) or forward(*a))
    monkeypatch.setattr(bjorck._SmallSpectral, "forward", spy)
    x = w.clone().requires_grad_()
    out, new_u = spectral_bjorck(x, u)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    assert calls and out.shape == shape
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(w, tangent)
        jv = torch.autograd.forward_ad.unpack_dual(spectral_bjorck(dual, u)[0]).tangent
    # the general function (its small branch: the same C loops) on the reshaped matrix
    matrix = w.reshape(shape[0], -1)
    args = (u, 1e-3, 1e-3, 0.5, 10, 15)
    ref = matrix.clone().requires_grad_()
    expected, expected_u, *_ = bjorck._SpectralBjorckGram.apply(ref, *args)
    (expected_grad,) = torch.autograd.grad(expected, ref, grad_out.reshape(matrix.shape))
    _, expected_jv = torch.func.jvp(
        lambda m: bjorck._SpectralBjorckGram.apply(m, *args)[0],
        (matrix,),
        (tangent.reshape(matrix.shape),),
    )
    torch.testing.assert_close(out, expected.view(shape), atol=0, rtol=0)
    torch.testing.assert_close(new_u, expected_u, atol=0, rtol=0)
    torch.testing.assert_close(grad, expected_grad.view(shape), atol=1e-13, rtol=0)
    torch.testing.assert_close(jv, expected_jv.view(shape), atol=1e-12, rtol=1e-10)
