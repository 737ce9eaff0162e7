"""How tight the bounds are, measured: empirical lower bounds on Lipschitz constants.

A sound bound K is at least the true constant L, and every slope measured on the model is at
most L, so K / measured ≥ K / L ≥ 1: a ratio near 1 proves the bound tight; a large one says
that no slope found comes near it, and the certificates (margin / K) are probably about that
much smaller than the model's robustness. `audit` and the test metrics
(`lipschitz_lower`, `bound_tightness`) report it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .bounds import eval_mode

__all__ = ["empirical_lipschitz", "jacobian_norm", "margin_slopes"]


def jacobian_norm(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_iter: int = 30,
    generator: torch.Generator | None = None,
) -> float:
    """The largest ‖J(x_i)·v‖ over unit v found by power iteration on JᵀJ at each sample x_i of
    the batch `x` (samples processed independently): a lower bound on the Lipschitz constant
    of `fn`, exact for a linear `fn` once the iteration converges."""
    shape = (-1, *([1] * (x.ndim - 1)))
    x = x.detach()
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    v = v / v.flatten(1).norm(dim=1).view(shape)
    best = 0.0
    with torch.enable_grad():
        for _ in range(n_iter):
            _, jv = torch.func.jvp(fn, (x,), (v,))
            best = max(best, float(jv.detach().flatten(1).norm(dim=1).max()))
            _, vjp_fn = torch.func.vjp(fn, x)
            (jtjv,) = vjp_fn(jv)
            norms = jtjv.detach().flatten(1).norm(dim=1)
            if not bool((norms > 0).any()):
                break
            v = jtjv.detach() / norms.clamp_min(torch.finfo(norms.dtype).tiny).view(shape)
    return best


def empirical_lipschitz(
    model: nn.Module,
    x: torch.Tensor | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    points: int = 32,
    n_iter: int = 10,
    seed: int = 0,
) -> float:
    """Lower bound on the Lipschitz constant of `model` in eval mode: `jacobian_norm` at the
    first `points` samples of `x`, or without `x` at `points` uniform random inputs of
    `input_shape` (default `model.input_shape`)."""
    if points < 1 or n_iter < 1:
        raise ValueError(f"points and n_iter must be >= 1 (got {points}, {n_iter})")
    gen = torch.Generator().manual_seed(seed)
    param = next(model.parameters(), None)
    like = param.detach() if param is not None else torch.zeros(())
    if x is None:
        shape = tuple(input_shape if input_shape is not None else model.input_shape)
        x = torch.rand((points, *shape), generator=gen, dtype=like.dtype)
    with eval_mode(model):
        return jacobian_norm(model, x[:points].to(like.device), n_iter, gen)


def margin_slopes(
    model: nn.Module, x: torch.Tensor, pair_norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the certified constant `pair_norms[k, j]` of the margin f_k − f_j that sets
    its certificate (k predicted, j the class of the smallest margin / constant) and that
    margin's gradient norm at the sample, a lower bound on the margin's true constant."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        logits = model(x)
        pred = logits.argmax(dim=1, keepdim=True)
        margins = logits.gather(1, pred) - logits
        pair = pair_norms.to(logits.device, logits.dtype)[pred.squeeze(1)]
        ratio = torch.where(pair > 0, margins.detach() / pair, math.inf)
        ratio.scatter_(1, pred, math.inf)
        j = ratio.argmin(dim=1, keepdim=True)
        (grad,) = torch.autograd.grad(margins.gather(1, j).sum(), x)
    return pair.gather(1, j).squeeze(1).detach(), grad.flatten(1).norm(dim=1)
