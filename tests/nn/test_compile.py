"""Models of the zoo run under torch.compile (traced through AOTAutograd) with the results of
eager mode: the NumPy-based Björck forms step aside for the traceable iterations, and the
custom autograd Functions (GroupSort2's C loops, the pooling, AOL's Gram sums) still apply."""

from __future__ import annotations

import copy

import pytest
import torch

from tradeoff import zoo


def _first_weight(model: torch.nn.Module) -> torch.Tensor:
    return model[0].parametrizations.weight.original


@pytest.mark.parametrize("layer", ["spectral", "aol"])
def test_compiled_model_matches_eager(layer):
    torch.manual_seed(0)
    model = zoo.create("seed_conv", input_shape=(1, 28, 28), layer=layer)
    twin = copy.deepcopy(model)  # the same weights and power-iteration vectors
    x = torch.rand(8, 1, 28, 28)
    eager = model(x)
    (eager_grad,) = torch.autograd.grad(eager.square().sum(), _first_weight(model))
    torch._dynamo.reset()
    out = torch.compile(twin, backend="aot_eager")(x)
    (grad,) = torch.autograd.grad(out.square().sum(), _first_weight(twin))
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-5)
