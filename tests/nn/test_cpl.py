"""Convex potential layers: the eval step is certified, and the bound follows the step."""

from __future__ import annotations

import pytest
import torch
from lipschitz_measure import measured_linear_norm, measured_lipschitz

from tradeoff.nn.cpl import CPLConv2d, CPLLinear


def _layers():
    torch.manual_seed(0)
    return [(CPLConv2d(3, 5, input_size=(6, 5)), (3, 6, 5)), (CPLLinear(6, 9), (6,))]


@pytest.mark.parametrize("index", [0, 1])
def test_the_eval_step_is_certified_and_the_bound_is_one(index):
    layer, shape = _layers()[index]
    layer.train()
    estimate = float(layer._estimate().detach())  # one power iteration: below the norm
    layer.eval()
    norm = layer.certified_norm()
    assert estimate <= norm * (1 + 1e-6)
    assert float(layer._step()) * norm**2 <= 2.0
    assert layer.lipschitz_bound(shape) == 1.0
    assert measured_lipschitz(layer, shape, points=4, iters=40) <= 1.0 + 1e-12


@pytest.mark.parametrize("index", [0, 1])
def test_a_step_beyond_two_over_the_squared_norm_is_reported(index):
    """The bound is max(1, t‖W‖² − 1) for the step in use, whatever computed the step."""
    layer, shape = _layers()[index]
    layer.eval()
    with torch.no_grad():
        layer.bias.fill_(1e3)  # every unit active: the layer is I − tWᵀW, of norm t‖W‖² − 1
    layer._step = lambda: torch.tensor(3.0 / layer.certified_norm() ** 2)  # 1.5 times CPL's step
    bound = type(layer).lipschitz_bound(layer, shape)
    assert bound == pytest.approx(2.0, rel=1e-5)
    measured = measured_linear_norm(layer, shape, iters=600)  # an affine map now
    assert measured <= bound * (1 + 1e-9)
    # exact for the dense layer; the zero-padded convolution's norm on a 6×5 grid lies below
    # the bound of its circular embedding (`certified_norm`), so its step falls short of 3/‖W‖²
    assert measured > 1.4 and (index == 0 or measured == pytest.approx(bound, rel=1e-3))
