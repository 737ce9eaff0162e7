"""Attacks that test certificates from outside: L2 PGD on the margin, no tradeoff code."""

from __future__ import annotations

import math

import torch


def pgd_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    radius: torch.Tensor,
    steps: int = 60,
    restarts: int = 3,
    seed: int = 0,
) -> torch.Tensor:
    """L2 PGD on the margin max_{j≠k} f_j − f_k, confined to per-sample balls of `radius`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pred = model(x).argmax(1)
    flipped = torch.zeros(len(x), dtype=torch.bool)
    r = radius.view(-1, *([1] * (x.ndim - 1)))
    step = 2.5 * r / steps
    for _ in range(restarts):
        delta = torch.randn(x.shape, generator=gen)
        delta = (
            delta / delta.flatten(1).norm(dim=1).view_as(r) * r * torch.rand(r.shape, generator=gen)
        )
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model(x + delta)
            true = logits.gather(1, pred[:, None]).squeeze(1)
            other = logits.scatter(1, pred[:, None], -math.inf).max(1).values
            (grad,) = torch.autograd.grad((other - true).sum(), delta)
            with torch.no_grad():
                g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(r)
                delta = delta + step * g
                norm = delta.flatten(1).norm(dim=1).view_as(r)
                delta = delta * torch.clamp(r / norm.clamp_min(1e-12), max=1.0)
                flipped |= model(x + delta).argmax(1) != pred
    return flipped
