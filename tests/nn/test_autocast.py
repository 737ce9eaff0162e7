"""Under autocast (bf16, as `tradeoff-bench --bf16` runs), constrained weights are computed in
the parameters' dtype: autocast casts them for the layer's own convolution or product, and
Gram matrices, eigendecompositions and norms never run in bf16."""

from __future__ import annotations

import copy

import pytest
import torch

from tradeoff import nn as lnn
from tradeoff import zoo


def _parametrized(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "parametrizations")]


@pytest.mark.parametrize("layer", ["spectral", "aol"])
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (1, 8, 8)])
def test_training_step_under_bf16_autocast(layer, input_shape):
    """A training step runs, and the weights are those fp32 mode computes from the same state."""
    torch.manual_seed(0)
    model = zoo.create("seed_conv", input_shape=input_shape, layer=layer).train()
    twin = copy.deepcopy(model)
    x, y = torch.rand(16, *input_shape), torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = {name: m.weight for name, m in _parametrized(model)}
        logits = model(x)
    expected = {name: m.weight for name, m in _parametrized(twin)}
    assert logits.dtype == torch.bfloat16
    for name, w in weights.items():
        assert w.dtype == torch.float32, name
        torch.testing.assert_close(w, expected[name], atol=0, rtol=0)
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    for _, m in _parametrized(model):
        grad = m.parametrizations.weight.original.grad
        assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all()
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(m.weight.dtype == torch.float32 for _, m in _parametrized(model))
        assert model(x).dtype == torch.bfloat16


@pytest.mark.parametrize("layer", [lnn.SLLLinear(12, 16), lnn.SLLConv2d(4, 6)])
def test_sll_scaling_ignores_autocast(layer):
    """SLL's T is a bound: rounded to bf16 it could fall below the exact one."""
    expected = layer.scaling()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scaling = layer.scaling()
    assert scaling.dtype == torch.float32
    torch.testing.assert_close(scaling, expected, atol=0, rtol=0)
