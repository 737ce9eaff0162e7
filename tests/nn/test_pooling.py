"""ScaledL2NormPool2d's one-node autograd agrees with the plain formula, in every mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tradeoff.nn import ScaledL2NormPool2d


def reference(x: torch.Tensor, k: tuple[int, int], eps: float = 1e-6) -> torch.Tensor:
    sq = F.avg_pool2d(x.square(), k) * (k[0] * k[1])
    return torch.sqrt(sq.clamp_min(eps**2))


@pytest.mark.parametrize(
    ("shape", "k"), [((2, 3, 6, 8), (2, 2)), ((2, 2, 7, 5), (2, 2)), ((1, 2, 6, 9), (3, 2))]
)
def test_l2_norm_pool_matches_the_formula(shape, k):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x[0, 0, :2, :2] = 0.0  # an all-zero window: value eps, gradient 0
    x.requires_grad_(True)
    pool = ScaledL2NormPool2d(k)
    torch.testing.assert_close(pool(x), reference(x, k))
    assert torch.autograd.gradcheck(pool, (x,))
    up = torch.randn(pool(x).shape, generator=gen, dtype=torch.float64)
    (mine,) = torch.autograd.grad((pool(x) * up).sum(), x)
    (ref,) = torch.autograd.grad((reference(x, k) * up).sum(), x)
    torch.testing.assert_close(mine, ref)
    assert mine[0, 0, :2, :2].eq(0).all()
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    _, jv = torch.func.jvp(pool, (x.detach(),), (v,))
    _, expected = torch.func.jvp(lambda t: reference(t, k), (x.detach(),), (v,))
    torch.testing.assert_close(jv, expected)
    torch.testing.assert_close(
        torch.func.vmap(pool)(x.detach()[None]), reference(x.detach(), k)[None]
    )


def test_overlapping_windows_keep_the_autograd_chain():
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    pool = ScaledL2NormPool2d(3, stride=2)
    expected = torch.sqrt((F.avg_pool2d(x.square(), 3, 2) * 9).clamp_min(1e-12))
    torch.testing.assert_close(pool(x), expected)
    assert torch.autograd.gradcheck(pool, (x,))
