"""Björck orthonormalization: the fast (spectral) form computes deel-lip's iterations.

Every test runs three ways (the `spectral_implementation` fixture of conftest.py): small
weights wholly in C (`_spectral.c`, after torch's eigh), torch products with the scalar loops
in C, and torch products with the loops in NumPy.
"""

from __future__ import annotations

import pytest
import torch

from tradeoff.nn import SpectralLinear, bjorck_orthonormalize, spectral_bjorck

pytestmark = pytest.mark.usefixtures("spectral_implementation")


def reference_bjorck(w: torch.Tensor, eps: float = 1e-3, beta: float = 0.5, max_iter: int = 15):
    """deel-lip's iteration: w <- (1 + beta) w - beta w wᵀ w, until the update is small."""
    for _ in range(max_iter):
        new_w = (1 + beta) * w - beta * w @ w.t() @ w
        delta = torch.linalg.matrix_norm((new_w - w).detach())
        w = new_w
        if delta < eps:
            break
    return w


def _matrix(shape: tuple[int, int], condition: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(shape, generator=gen), full_matrices=False)
    s = torch.logspace(0, -condition, min(shape))
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize("shape", [(64, 1568), (1568, 64), (10, 64), (32, 144), (16, 9), (48, 48)])
@pytest.mark.parametrize("condition", [0.0, 0.5, 4.0])  # 0: orthogonal, all singular values tie
def test_fast_bjorck_matches_the_iteration_and_its_gradient(shape, condition):
    w = _matrix(shape, condition, seed=sum(shape))
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    mine = w.clone().requires_grad_()
    ref = w.clone().double().requires_grad_()
    out = bjorck_orthonormalize(mine)
    expected = reference_bjorck(ref)
    (out * grad_out).sum().backward()
    (expected * grad_out.double()).sum().backward()
    assert out.dtype == w.dtype and out.shape == w.shape
    torch.testing.assert_close(out.double(), expected.detach(), atol=2e-5, rtol=0)
    rel = (mine.grad.double() - ref.grad).norm() / ref.grad.norm()
    assert rel < 1e-4
    # Its largest singular value, measured in float64, is the one the iteration converges to.
    top = torch.linalg.matrix_norm(out.detach().double(), 2)
    assert top <= 1 + 1e-5


def test_stopping_rule_counts_the_same_iterations():
    w = _matrix((64, 1568), 1.0, seed=3)
    for max_iter in (1, 2, 3, 15):
        out = bjorck_orthonormalize(w, max_iter=max_iter)
        torch.testing.assert_close(
            out.double(), reference_bjorck(w.double(), max_iter=max_iter), atol=2e-5, rtol=0
        )
    loose = bjorck_orthonormalize(w, eps=0.5)
    expected = reference_bjorck(w.double(), eps=0.5)
    torch.testing.assert_close(loose.double(), expected, atol=2e-5, rtol=0)


def test_fast_bjorck_derivatives_with_repeated_singular_values():
    """Ties among eigenvalues (here three groups) need the divided differences' tie rule."""
    gen = torch.Generator().manual_seed(7)
    u, _, vh = torch.linalg.svd(torch.randn(12, 40, generator=gen, dtype=torch.float64), False)
    s = torch.tensor([1.0] * 4 + [0.3] * 4 + [0.01] * 4, dtype=torch.float64)
    w = (u @ torch.diag(s) @ vh).requires_grad_()
    assert torch.autograd.gradcheck(bjorck_orthonormalize, (w,))
    v = torch.randn(12, 40, generator=gen, dtype=torch.float64)
    _, jv = torch.func.jvp(bjorck_orthonormalize, (w.detach(),), (v,))
    _, expected = torch.func.jvp(reference_bjorck, (w.detach(),), (v,))
    torch.testing.assert_close(jv, expected)


def test_layer_in_training_mode_runs_under_vmap_over_inputs():
    """torch.func transforms over a layer's inputs recompute its weight through the fast form."""
    layer = SpectralLinear(40, 12).train()
    x = torch.randn(5, 3, 40)
    torch.testing.assert_close(torch.func.vmap(layer)(x), torch.stack([layer(b) for b in x]))


def reference_spectral_bjorck(w, u, eps_spectral=1e-3, max_power_iter=10, **bjorck):
    """deel-lip's layer map as written: power iteration from u, w / (σ + eps), Björck."""
    for _ in range(max(max_power_iter, 1)):
        v = torch.nn.functional.normalize(w.detach().t() @ u, dim=0)
        new_u = torch.nn.functional.normalize(w.detach() @ v, dim=0)
        delta = torch.linalg.vector_norm(new_u - u)
        u = new_u
        if delta < eps_spectral:
            break
    sigma = torch.dot(u, w @ v)
    return reference_bjorck(w / (sigma + eps_spectral), **bjorck), u


SPECTRAL_SHAPES = [(64, 1568), (1568, 64), (10, 64), (16, 9), (40, 12), (64, 64), (96, 200)]


@pytest.mark.parametrize("shape", SPECTRAL_SHAPES)
@pytest.mark.parametrize("max_power_iter", [1, 3, 10])
def test_fused_spectral_bjorck_is_deel_lips_map_with_its_derivatives(shape, max_power_iter):
    """One eigendecomposition gives deel-lip's power iteration, σ, Björck and their gradient."""
    gen = torch.Generator().manual_seed(sum(shape) + max_power_iter)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    u = torch.nn.functional.normalize(
        torch.randn(shape[0], generator=gen, dtype=torch.float64), dim=0
    )
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    tangent = torch.randn(shape, generator=gen, dtype=torch.float64)
    mine, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    out, new_u = spectral_bjorck(mine, u, max_power_iter=max_power_iter)
    expected, expected_u = reference_spectral_bjorck(ref, u, max_power_iter=max_power_iter)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(new_u, expected_u, atol=1e-12, rtol=0)
    (out * grad_out).sum().backward()
    (expected * grad_out).sum().backward()
    torch.testing.assert_close(mine.grad, ref.grad, atol=1e-11, rtol=1e-9)
    _, jv = torch.func.jvp(
        lambda x: spectral_bjorck(x, u, max_power_iter=max_power_iter)[0], (w,), (tangent,)
    )
    _, expected_jv = torch.func.jvp(
        lambda x: reference_spectral_bjorck(x, u, max_power_iter=max_power_iter)[0],
        (w,),
        (tangent,),
    )
    torch.testing.assert_close(jv, expected_jv, atol=1e-11, rtol=1e-9)
    # dual tensors are not torch.func's: they take the eigenvalue forms and their jvp rules
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(w, tangent)
        out = spectral_bjorck(dual, u, max_power_iter=max_power_iter)[0]
        dual_jv = torch.autograd.forward_ad.unpack_dual(out).tangent
    torch.testing.assert_close(dual_jv, expected_jv, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("shape", [(64, 1568), (1568, 64), (16, 9), (10, 64)])
def test_fused_spectral_bjorck_in_float32_stays_below_one(shape):
    gen = torch.Generator().manual_seed(5)
    w = _matrix(shape, 3.0, seed=11) * 4  # ill-conditioned, far from normalised
    u = torch.nn.functional.normalize(torch.randn(shape[0], generator=gen), dim=0)
    out, _ = spectral_bjorck(w, u)
    expected, _ = reference_spectral_bjorck(w.double(), u.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)
    assert torch.linalg.matrix_norm(out.double(), 2) <= 1 + 1e-5


def test_fused_spectral_bjorck_gradcheck_and_degenerate_inputs():
    gen = torch.Generator().manual_seed(3)
    for shape in [(5, 17), (17, 5)]:
        w = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        u = torch.nn.functional.normalize(
            torch.randn(shape[0], generator=gen, dtype=torch.float64), dim=0
        )
        assert torch.autograd.gradcheck(lambda x, u=u: spectral_bjorck(x, u)[0], (w,))
    # A zero weight stays zero (σ = 0, no division by zero).
    zero = torch.zeros(8, 30, dtype=torch.float64)
    out, new_u = spectral_bjorck(
        zero, torch.nn.functional.normalize(torch.ones(8, dtype=torch.float64), dim=0)
    )
    assert torch.equal(out, zero) and torch.isfinite(new_u).all()


def test_spectral_layer_keeps_deel_lips_power_vector_across_steps():
    """Training steps update the persistent vector exactly as the step-by-step iteration does."""
    torch.manual_seed(0)
    layer = SpectralLinear(300, 20).double().train()
    u = layer.parametrizations.weight[0].u.clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(32, 300, dtype=torch.float64)
    for _ in range(4):
        raw = layer.parametrizations.weight.original.detach().clone()
        expected, u = reference_spectral_bjorck(raw, u)
        y = layer(x)  # computes the constrained weight once, updating u once
        torch.testing.assert_close(y, x @ expected.t() + layer.bias, atol=1e-12, rtol=0)
        torch.testing.assert_close(layer.parametrizations.weight[0].u, u, atol=1e-12, rtol=0)
        opt.zero_grad()
        y.square().sum().backward()
        opt.step()
