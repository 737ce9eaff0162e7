"""`tradeoff.nn.autograd.Function` keeps torch's semantics while skipping argument binding."""

from __future__ import annotations

import torch

from tradeoff.nn.autograd import Function


class _Scale(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, factor: float = 3.0) -> torch.Tensor:
        return x * factor

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _: None) -> torch.Tensor:
        return tangent * ctx.factor


def test_every_call_form_gives_torchs_result():
    x = torch.randn(5, requires_grad=True)
    assert _Scale._arity == 2
    for factor, call in (
        (2.0, lambda: _Scale.apply(x, 2.0)),  # the fast path
        (3.0, lambda: _Scale.apply(x)),  # a default filled in: torch's path
        (5.0, lambda: _Scale.apply(x, factor=5.0)),  # keywords: torch's path
    ):
        y = call()
        torch.testing.assert_close(y, x * factor)
        (g,) = torch.autograd.grad(y.sum(), x)
        torch.testing.assert_close(g, torch.full_like(x, factor))
    batched = torch.func.vmap(lambda t: _Scale.apply(t, 2.0))(x.detach()[:, None])
    torch.testing.assert_close(batched, 2 * x.detach()[:, None])
    _, tangent = torch.func.jvp(lambda t: _Scale.apply(t, 2.0), (x.detach(),), (torch.ones(5),))
    torch.testing.assert_close(tangent, torch.full((5,), 2.0))
