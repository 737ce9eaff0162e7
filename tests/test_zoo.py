"""The zoo: names, options, the seed architectures, and the parametrization contract."""

from __future__ import annotations

import io
from unittest import mock

import pytest
import torch
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.certificates import lipschitz_bound
from tradeoff.nn.parametrizations import SpectralBjorck


def test_available_lists_the_required_models():
    assert {"seed_conv", "seed_mlp", "lipconvnet", "sll_net", "convnet"} <= set(zoo.available())


def test_seed_conv_is_the_seed_architecture():
    model = zoo.create("seed_conv", input_shape=(1, 28, 28), num_classes=10)
    kinds = [type(m) for m in model]
    assert [k.__name__.replace("Parametrized", "") for k in kinds] == [
        "SpectralConv2d",
        "GroupSort2",
        "ScaledL2NormPool2d",
        "SpectralConv2d",
        "GroupSort2",
        "ScaledL2NormPool2d",
        "Flatten",
        "SpectralLinear",
        "GroupSort2",
        "SpectralLinear",
    ]
    assert (model[0].out_channels, model[3].out_channels) == (16, 32)
    assert model[0].padding_kind == "same" and model[0].kernel_size == (3, 3)
    assert (model[7].in_features, model[7].out_features) == (32 * 7 * 7, 64)
    assert model[9].out_features == 10 and model[9].bias is None
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_seed_mlp_is_the_seed_architecture():
    model = zoo.create("seed_mlp", input_shape=(1, 28, 28), num_classes=10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, lnn.GroupSort2) for m in model) == 2


@pytest.mark.parametrize("layer", ["spectral", "aol", "plain"])
@pytest.mark.parametrize("activation", sorted(zoo.ACTIVATIONS))
def test_lipconvnet_options_on_cifar_shapes(layer, activation):
    model = zoo.create(
        "lipconvnet",
        input_shape=(3, 32, 32),
        num_classes=10,
        layer=layer,
        activation=activation,
        width=8,
        depth=1,
    )
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    bound = lipschitz_bound(model)
    assert bound > 0
    if layer != "plain":
        assert bound <= 1 + 1e-3


@pytest.mark.parametrize("pooling", zoo.POOLINGS)
def test_lipconvnet_poolings(pooling):
    model = zoo.create(
        "lipconvnet", input_shape=(3, 32, 32), num_classes=10, pooling=pooling, width=4, depth=1
    )
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert lipschitz_bound(model) <= 1 + 1e-3


def test_sll_net_is_residual_and_bounded():
    model = zoo.create("sll_net", input_shape=(3, 32, 32), num_classes=10, width=8)
    assert any(isinstance(m, lnn.SLLConv2d) for m in model)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert lipschitz_bound(model) <= 1 + 1e-3


def test_unknown_model_and_option_errors_list_the_valid_ones():
    with pytest.raises(ValueError, match="seed_conv"):
        zoo.create("resnet9000")
    with pytest.raises(ValueError, match=r"valid options: .*activation"):
        zoo.create("seed_conv", widht=3)
    with pytest.raises(ValueError, match="activation must be one of"):
        zoo.create("seed_conv", activation="gelu")
    with pytest.raises(ValueError, match="num_classes"):
        zoo.create("seed_conv", num_classes=1)


def test_options_are_plain_keywords():
    opts = zoo.options("lipconvnet")
    assert {"width", "depth", "layer", "activation", "pooling"} <= set(opts)
    assert all(isinstance(v, (int, float, str, tuple)) for v in opts.values())


def test_constrained_weight_computed_once_per_training_step():
    torch.manual_seed(0)
    model = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    # each parametrization once: the weight (compute), or a dense layer's mixing step (linear)
    with (
        mock.patch.object(
            SpectralBjorck, "compute", autospec=True, side_effect=SpectralBjorck.compute
        ) as compute,
        mock.patch.object(
            SpectralBjorck, "linear", autospec=True, side_effect=SpectralBjorck.linear
        ) as linear,
    ):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    calls = [c.args[0] for c in compute.call_args_list + linear.call_args_list]
    params = [m for m in model.modules() if isinstance(m, SpectralBjorck)]
    assert len(params) == 4  # two convolutions, two dense layers
    assert sorted(map(id, calls)) == sorted(map(id, params))


def test_eval_mode_caches_until_the_weights_change():
    torch.manual_seed(0)
    layer = lnn.SpectralLinear(6, 4)
    layer.eval()
    with torch.no_grad():
        first = layer.weight
        assert layer.weight is first  # cached, not recomputed
        assert not first.requires_grad
        layer.parametrizations.weight.original.add_(0.1)
        assert layer.weight is not first
    assert layer.weight.requires_grad  # with autograd on, the cache carries the gradient
    layer.train()
    assert layer.weight.requires_grad


def test_state_dict_round_trip_reproduces_outputs():
    torch.manual_seed(0)
    a = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10)
    a(torch.rand(4, 1, 8, 8))  # a training-mode forward moves the power-iteration vectors
    torch.manual_seed(1)
    b = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10)
    state = a.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    b.load_state_dict(state)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def _aol_sides(model: nn.Module) -> list[str]:
    return [
        m.parametrizations.weight[0].side for m in model.modules() if isinstance(m, lnn.AOLLinear)
    ]


def test_aol_side_option_and_pickled_models_keep_the_side_they_were_built_with():
    import io

    x = torch.rand(3, 1, 8, 8)
    auto = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10, layer="aol").eval()
    assert _aol_sides(auto) == ["output", "output"]  # dense 128 -> 64 and 64 -> 10 narrow
    paper = zoo.create(
        "seed_conv", input_shape=(1, 8, 8), num_classes=10, layer="aol", aol_side="input"
    )
    assert _aol_sides(paper) == ["input", "input"]
    with pytest.raises(ValueError, match="aol_side"):
        zoo.create("seed_mlp", input_shape=(1, 8, 8), layer="aol", aol_side="rows")
    buffer = io.BytesIO()
    torch.save(auto, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert _aol_sides(again) == ["output", "output"]
    torch.testing.assert_close(again.eval()(x), auto(x))
    # A model pickled before `aol_side` existed (recipe version 1) was built on the input side.
    name, opts = auto.spec
    old = zoo._rebuild(name, auto.input_shape, 10, opts, auto.state_dict(), False)
    assert _aol_sides(old) == ["input", "input"]


@pytest.mark.parametrize("layer", ["cpl", "sandwich", "cayley"])
def test_family_caches_follow_loaded_weights_and_models_pickle(layer):
    """Eval mode caches Fourier blocks and CPL's certified step: loading other weights into a
    model whose caches are filled must give the other model's outputs, and so must pickling."""
    x = torch.rand(3, 1, 8, 8)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = zoo.create("convnet", input_shape=(1, 8, 8), layer=layer, width=4, depth=1)
        model(torch.rand(4, 1, 8, 8)).sum().backward()  # a training step moves CPL's vector
        models.append(model.eval())
    a, b = models
    with torch.no_grad():
        a(x)  # fill the caches
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(b, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), b(x), rtol=0, atol=0)
