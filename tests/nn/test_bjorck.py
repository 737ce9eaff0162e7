"""Björck orthonormalization: the fast (spectral) form computes deel-lip's iterations."""

from __future__ import annotations

import pytest
import torch

from tradeoff.nn import SpectralLinear, bjorck_orthonormalize


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
