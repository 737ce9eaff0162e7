"""AOL's hand-written row-sum derivative agrees with autograd on the textbook formula."""

from __future__ import annotations

import pytest
import torch

from tradeoff.nn import AOLLinear
from tradeoff.nn.parametrizations import AOLRescale


def textbook_aol(w: torch.Tensor, eps: float = 1e-12, side: str = "input") -> torch.Tensor:
    """Prach & Lampert: W diag(d), d_i = (Σ_j |WᵀW|_ij)^(-1/2), through plain autograd; on the
    output side the same rule applied to Wᵀ."""
    if side == "output":
        return textbook_aol(w.t(), eps).t()
    return w * torch.rsqrt((w.t() @ w).abs().sum(dim=1).clamp_min(eps)).unsqueeze(0)


def _assert_matches_textbook(w: torch.Tensor, gen: torch.Generator, side: str = "input") -> None:
    """Values, reverse-mode gradients and forward-mode tangents equal the textbook formula's."""
    aol = AOLRescale(side=side)

    def textbook(x: torch.Tensor) -> torch.Tensor:
        return textbook_aol(x, side=side)

    torch.testing.assert_close(aol.compute(w), textbook(w))
    up = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    (mine,) = torch.autograd.grad((aol.compute(w) * up).sum(), w)
    (ref,) = torch.autograd.grad((textbook(w) * up).sum(), w)
    torch.testing.assert_close(mine, ref)
    v = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    _, jv = torch.func.jvp(aol.compute, (w.detach(),), (v,))
    _, expected = torch.func.jvp(textbook, (w.detach(),), (v,))
    torch.testing.assert_close(jv, expected)


@pytest.mark.parametrize("shape", [(6, 15), (10, 4), (5, 5)])
@pytest.mark.parametrize("side", ["input", "output"])
def test_aol_linear_derivatives_match_the_textbook_formula(shape, side):
    gen = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(AOLRescale(side=side).compute, (w,))
    _assert_matches_textbook(w, gen, side)


def test_aol_side_is_checked_and_auto_rescales_the_smaller_gram():
    assert AOLLinear(1568, 64).parametrizations.weight[0].side == "output"
    assert AOLLinear(64, 1568).parametrizations.weight[0].side == "input"
    assert AOLLinear(32, 32).parametrizations.weight[0].side == "input"
    with pytest.raises(ValueError, match="side"):
        AOLLinear(8, 4, side="left")
    with pytest.raises(ValueError, match="4-D one with side='input'"):
        AOLRescale(side="output").compute(torch.randn(4, 3, 3, 3))


@pytest.mark.parametrize("shape", [(3, 700), (10, 1100)])
def test_aol_row_blocks_add_up_to_the_whole(shape):
    """Wide inputs are processed in several blocks of rows of WᵀW (2 MB each)."""
    from tradeoff.nn.parametrizations import _row_blocks

    gen = torch.Generator().manual_seed(shape[1])
    w = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert len(_row_blocks(w)) > 1
    _assert_matches_textbook(w, gen)


def test_aol_layer_trains_under_vmap_over_inputs():
    layer = AOLLinear(12, 5).train()
    x = torch.randn(4, 3, 12)
    torch.testing.assert_close(torch.func.vmap(layer)(x), torch.stack([layer(b) for b in x]))
