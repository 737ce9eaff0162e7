"""Vanilla export: plain layers, same outputs, same bound."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.certificates import lipschitz_bound
from tradeoff.export import export_vanilla


@pytest.mark.parametrize(
    "name,opts,shape",
    [
        ("seed_conv", {}, (1, 28, 28)),
        ("seed_conv", {"layer": "aol", "pooling": "invertible"}, (1, 28, 28)),
        ("seed_mlp", {}, (1, 8, 8)),
        ("lipconvnet", {"width": 8, "pooling": "stride"}, (3, 15, 17)),
        ("lipconvnet", {"width": 8, "activation": "householder"}, (3, 32, 32)),
        ("sll_net", {"width": 8}, (3, 16, 16)),
        ("convnet", {"width": 4, "depth": 1}, (1, 8, 8)),
        ("convnet", {"width": 4, "depth": 1, "layer": "spectral"}, (3, 7, 9)),
        ("convnet", {"width": 4, "depth": 1, "layer": "plain"}, (3, 7, 9)),
        ("convnet", {"width": 4, "depth": 1, "layer": "cpl"}, (3, 7, 9)),
        ("convnet", {"width": 4, "depth": 1, "layer": "sandwich"}, (3, 7, 9)),
        ("convnet", {"width": 4, "depth": 1, "layer": "cayley"}, (3, 7, 9)),
        ("seed_mlp", {"layer": "sandwich"}, (1, 8, 8)),
        ("seed_mlp", {"layer": "cayley"}, (1, 8, 8)),
    ],
)
def test_export_vanilla_equivalence(name, opts, shape):
    torch.manual_seed(0)
    model = zoo.create(name, input_shape=shape, num_classes=10, **opts)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(32, *shape)
    for _ in range(3):  # move the weights away from their initial values
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    vanilla = export_vanilla(model)
    model.eval()
    torch.testing.assert_close(vanilla(x), model(x), atol=1e-5, rtol=1e-5)
    for m in vanilla.modules():
        assert not parametrize.is_parametrized(m)
        assert not isinstance(m, (lnn.LipschitzConv2d, lnn.SLLConv2d, lnn.SLLLinear))
        assert not isinstance(m, (lnn.CPLConv2d, lnn.SandwichConv2d, lnn.CayleyConv2d))
    plain = [m for m in vanilla.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert plain and all(type(m) in (nn.Conv2d, nn.Linear) for m in plain)
    # an exported residual or sandwich layer is bounded as plain layers, above its theorem's 1
    if name != "sll_net" and opts.get("layer") not in ("cpl", "sandwich"):
        assert lipschitz_bound(vanilla, shape) == pytest.approx(lipschitz_bound(model), rel=0.02)
