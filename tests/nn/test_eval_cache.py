"""Eval mode's cached constrained weights follow every write to the parameters they come from,
and a step taken in eval mode trains the weights: every constrained layer family, trained
briefly on real digits."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy
from tradeoff.nn.parametrizations import CachedParametrization

# Each constrained layer family, convolutional and dense, with stride where the family has one.
FAMILIES = {
    "spectral dense": ("seed_mlp", {"layer": "spectral"}),
    "spectral conv": ("seed_conv", {"layer": "spectral", "filters": (8,), "hidden": 16}),
    "spectral stride conv": (
        "lipconvnet",
        {"layer": "spectral", "width": 4, "depth": 1, "stages": 1},
    ),
    "aol dense": ("seed_mlp", {"layer": "aol"}),
    "aol conv": ("seed_conv", {"layer": "aol", "filters": (8,), "hidden": 16}),
    "sll conv": ("sll_net", {"width": 4, "depth": 1, "stages": 1}),
    "sll dense": ("sll_dense", {}),
}


def _sll_dense(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    fan_in = shape[0] * shape[1] * shape[2]
    model = zoo.LipNet(
        nn.Flatten(),
        lnn.SLLLinear(fan_in, 32),
        lnn.SLLLinear(fan_in, 32),
        lnn.AOLLinear(fan_in, num_classes, bias=False),
        input_shape=shape,
        num_classes=num_classes,
    )
    return model


def _build(family: str, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    name, opts = FAMILIES[family]
    if name == "sll_dense":
        return _sll_dense(shape, 10)
    return zoo.create(name, input_shape=shape, num_classes=10, **opts)


@pytest.fixture(scope="module", params=list(FAMILIES))
def trained(request, digits):
    """(family, model) after one epoch on digits, in eval mode."""
    model = _build(request.param, digits.input_shape)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xy = (digits.train.x, digits.train.y)
    fit(model, TauCrossEntropy(5.0), opt, xy, None, epochs=1, batch_size=64, progress=False)
    return request.param, model.eval()


def _fresh(family: str, model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A new model of the same family holding `model`'s current state: the ground truth."""
    twin = _build(family, shape)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _writes() -> dict[str, object]:
    def data_add(p: torch.Tensor, noise: torch.Tensor) -> None:
        p.data.add_(noise)

    def data_assign(p: torch.Tensor, noise: torch.Tensor) -> None:
        p.data = p.data + noise

    def numpy_write(p: torch.Tensor, noise: torch.Tensor) -> None:
        p.detach().numpy()[...] += noise.numpy()

    return {"data.add_": data_add, ".data =": data_assign, ".numpy()": numpy_write}


@pytest.mark.parametrize("write", list(_writes()))
def test_eval_outputs_follow_writes_that_bypass_autograd(trained, digits, write):
    family, model = trained
    model = copy.deepcopy(model)
    x = digits.test.x[:64]
    with torch.no_grad():
        before = model(x)  # fills the caches
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        version = p._version
        _writes()[write](p, 0.2 * torch.randn(p.shape, generator=gen) * p.detach().abs().mean())
        if write != ".data =":
            assert p._version == version  # the write is invisible to version counters
    with torch.no_grad():
        after = model(x)
        truth = _fresh(family, model, digits.input_shape)(x)
    assert not torch.allclose(before, truth, atol=1e-3)  # the writes changed the function
    torch.testing.assert_close(after, truth, rtol=1e-5, atol=1e-5)


def test_eval_outputs_follow_load_state_dict_and_buffer_writes(trained, digits):
    family, model = trained
    model = copy.deepcopy(model)
    x = digits.test.x[:64]
    other = _build(family, digits.input_shape).eval()  # an untrained model of the same family
    with torch.no_grad():
        model(x)
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), other(x), rtol=1e-5, atol=1e-5)
    for buf in model.buffers():  # power-iteration vectors and coefficients, through .data
        buf.data.mul_(0.5)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), _fresh(family, model, digits.input_shape)(x), rtol=1e-5, atol=1e-5
        )


def test_training_in_eval_mode_trains_every_weight(trained, digits):
    """An optimizer step in eval mode moves every parameter, with the gradients of train mode."""
    family, model = trained
    model = copy.deepcopy(model).eval()
    twin = copy.deepcopy(model).train()
    x, y = digits.train.x[:128], digits.train.y[:128]
    loss_fn = TauCrossEntropy(5.0)
    loss_fn(model(x), y).backward()
    loss_fn(twin(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert p.grad is not None and p.grad.abs().max() > 0, f"{family}: {name} has no gradient"
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6 * float(q.grad.norm()))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert model.training is False
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert losses[-1] < losses[0]


def test_eval_mode_computes_the_weight_once_while_nothing_changes(digits):
    model = _build("spectral conv", digits.input_shape).eval()
    x = digits.test.x[:8].clone().requires_grad_()
    params = [m for m in model.modules() if isinstance(m, CachedParametrization)]
    calls = []
    for param in params:
        original = param.compute
        param.compute = lambda w, original=original: calls.append(1) or original(w)
    with torch.no_grad():
        model(x)
        model(x)
    assert len(calls) == len(params)
    loss = model(x).square().sum()  # autograd on: still the cache, nothing recomputed
    assert len(calls) == len(params)
    (grad_x,) = torch.autograd.grad(loss, x)  # the input's gradient only
    assert len(calls) == len(params) and grad_x.abs().max() > 0


def test_a_cache_built_in_inference_mode_serves_autograd_afterwards(trained, digits):
    _, model = trained
    model = copy.deepcopy(model)
    x = digits.test.x[:16]
    with torch.inference_mode():
        expected = model(x)
    x = x.clone().requires_grad_()
    out = model(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out.detach(), expected)
    assert grad.abs().max() > 0
