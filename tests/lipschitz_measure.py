"""Independent measurements of Lipschitz constants through autograd (no tradeoff code)."""

from __future__ import annotations

import copy
import math

import torch


def _as_double_eval(layer: torch.nn.Module) -> torch.nn.Module:
    return layer.double().eval()


def measured_linear_norm(layer: torch.nn.Module, shape: tuple[int, ...], iters: int = 300) -> float:
    """Operator norm of an affine layer, by power iteration on A = layer(x) − layer(0)."""
    layer = _as_double_eval(layer)
    gen = torch.Generator().manual_seed(0)
    zero = torch.zeros((1, *shape), dtype=torch.float64)
    with torch.no_grad():
        offset = layer(zero)
    v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    best = 0.0
    for _ in range(iters):
        x = v.clone().requires_grad_(True)
        av = layer(x) - offset
        best = max(best, float(av.detach().norm()))
        (atav,) = torch.autograd.grad(av, x, av)
        v = atav / atav.norm()
    return best


def measured_lipschitz(
    layer: torch.nn.Module, shape: tuple[int, ...], points: int = 8, iters: int = 60
) -> float:
    """Lower bound on the Lipschitz constant of any layer: Jacobian power iteration at random
    points plus the largest ratio over random input pairs (near and far)."""
    layer = _as_double_eval(layer)
    gen = torch.Generator().manual_seed(1)
    best = 0.0
    for _ in range(points):
        x0 = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        v /= v.norm()
        for _ in range(iters):
            _, jv = torch.func.jvp(layer, (x0,), (v,))
            best = max(best, float(jv.detach().norm()))
            _, vjp = torch.func.vjp(layer, x0)
            (jtjv,) = vjp(jv)
            if float(jtjv.detach().norm()) == 0:
                break
            v = jtjv / jtjv.norm()
    with torch.no_grad():
        x = torch.randn((256, *shape), generator=gen, dtype=torch.float64)
        for scale in (1e-3, 0.1, 1.0, 10.0):
            y = x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            num = (layer(x) - layer(y)).flatten(1).norm(dim=1)
            den = (x - y).flatten(1).norm(dim=1)
            best = max(best, float((num / den).max()))
    return best


def jacobian_norm(
    layer: torch.nn.Module, shape: tuple[int, ...], points: int = 3, seed: int = 0
) -> float:
    """Largest spectral norm of the dense float64 Jacobian of `layer` (a copy, eval mode) at a
    few random points: the operator norm of a linear layer, a lower bound for any other."""
    layer = _as_double_eval(copy.deepcopy(layer))
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    best = 0.0
    for _ in range(points):
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        jac = torch.func.jacrev(lambda v: layer(v.view(1, *shape)).flatten())(x)
        best = max(best, float(torch.linalg.matrix_norm(jac.detach(), ord=2)))
    return best


def max_pool_constant(pool: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """The exact Lipschitz constant of a max pool: √(most windows one pixel is in), counted by
    pooling one-hot images (a pixel set to 1 over zeros is the max of every window it is in)."""
    h, w = shape[-2:]
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    with torch.no_grad():
        out = pool(eye)
    return math.sqrt(float((out == 1).flatten(1).sum(dim=1).max()))
