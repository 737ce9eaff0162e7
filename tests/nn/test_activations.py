"""GroupSort2's hand-written autograd agrees with sorting, in every autograd mode."""

from __future__ import annotations

import torch

from tradeoff.nn import GroupSort2


def _reference(x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(1, (x.shape[1] // 2, 2)).sort(dim=2).values.flatten(1, 2)


def test_groupsort2_values_in_every_mode():
    g = GroupSort2()
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    torch.testing.assert_close(g(x), _reference(x))
    with torch.no_grad():
        torch.testing.assert_close(g(x), _reference(x))
    torch.testing.assert_close(torch.func.vmap(g)(x.detach()[:, None]), _reference(x)[:, None])


def test_groupsort2_gradients():
    g = GroupSort2()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x,))
    assert torch.autograd.gradgradcheck(g, (x,))
    v = torch.randn_like(x)
    _, jv = torch.func.jvp(g, (x.detach(),), (v,))
    (expected,) = torch.autograd.functional.jvp(_reference, x.detach(), v)[1:]
    torch.testing.assert_close(jv, expected)
    jac = torch.func.jacrev(g)(x.detach()[:1, :, :1, :1].flatten(1))
    ref = torch.autograd.functional.jacobian(_reference, x.detach()[:1, :, :1, :1].flatten(1))
    torch.testing.assert_close(jac, ref)


def test_groupsort2_gradient_is_an_exact_permutation():
    """The backward swap moves gradients without arithmetic error, in every float dtype."""
    g = GroupSort2()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(8, 10, 3, 3).to(dtype)
        x[:, 1] = x[:, 0]  # ties keep their order, as a stable sort does
        x.requires_grad_(True)
        up = torch.randn(8, 10, 3, 3).to(dtype) * 1e30
        (ours,) = torch.autograd.grad(g(x), x, up)
        (ref,) = torch.autograd.grad(_reference(x), x, up)
        assert torch.equal(ours, ref), dtype
