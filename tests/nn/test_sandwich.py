"""Sandwich layers: the bound holds for the weights in use, orthonormal or not."""

from __future__ import annotations

import pytest
import torch
from lipschitz_measure import measured_lipschitz

from tradeoff.nn.sandwich import SandwichConv2d, SandwichLinear


def _perturbed(layer: torch.nn.Module, scale: float) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return layer


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: SandwichLinear(6, 4), (6,)),
        (lambda: SandwichConv2d(2, 3, 3, (5, 6)), (2, 5, 6)),
        (lambda: SandwichConv2d(3, 2, 2, (4, 4)), (3, 4, 4)),
    ],
)
def test_trained_like_weights_measure_within_the_bound_near_one(make, shape):
    torch.manual_seed(0)
    layer = _perturbed(make(), 0.5).eval()
    bound = layer.lipschitz_bound(shape)
    assert bound == pytest.approx(1.0, abs=1e-4)
    assert measured_lipschitz(layer, shape, points=6, iters=60) <= bound


def test_the_bound_covers_blocks_that_are_not_orthonormal():
    """[A B] with rows far from orthonormal (the theorem's premise fails): the bound
    (m/2)·√(1 + 4λ‖B‖²) still holds for the map computed, and exceeds 1."""
    torch.manual_seed(0)
    layer = _perturbed(SandwichLinear(5, 4), 0.3).double().eval()
    q = layer.q().detach() * 1.6
    layer.q = lambda: q
    bound = SandwichLinear.lipschitz_bound(layer, (5,))
    measured = measured_lipschitz(layer, (5,), points=8, iters=80)
    assert 1.0 < measured <= bound
