"""The training step of a `SpectralLinear` without its constrained weight (`_SpectralLinearGram`).

Where the batch has fewer rows than the weight's long side, a training-mode `SpectralLinear`
mixes its outputs (or inputs) by the n × n Björck polynomial instead of forming the weight.
These tests hold that path (both branches: mixing, and forming the weight when the Björck
multipliers are large) to the formed-weight map, its gradients and forward derivatives, and
check where it steps aside (eval mode, `parametrize.cached()`, large batches, autocast,
torch.func). Every test runs three ways (conftest.py's `spectral_implementation`).
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from tradeoff.nn import SpectralLinear, bjorck, spectral_bjorck, spectral_bjorck_linear

pytestmark = pytest.mark.usefixtures("spectral_implementation")

# (in, out, batch shape): narrowing (S = W) and widening (S = Wᵀ) layers, leading batch dims
CASES = [(1568, 64, (256,)), (300, 40, (32,)), (40, 300, (32,)), (100, 64, (2, 3))]


def _layer(fan_in: int, fan_out: int, dtype: torch.dtype, seed: int = 0) -> SpectralLinear:
    torch.manual_seed(seed)
    layer = SpectralLinear(fan_in, fan_out).to(dtype).train()
    with torch.no_grad():  # away from the orthogonal init, as in training: singular values
        w = layer.parametrizations.weight.original  # within a factor ~2, a non-zero bias
        w.mul_(torch.logspace(0, -0.3, w.shape[1], dtype=dtype))
        layer.bias.normal_()
    return layer


def _formed(layer: SpectralLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same step through the formed weight: output and updated u."""
    param = layer.parametrizations.weight[0]
    w, u = spectral_bjorck(layer.parametrizations.weight.original, param.u, *param.settings())
    return F.linear(x, w, layer.bias), u


@pytest.fixture(params=["mixed", "formed"])
def branch(request, monkeypatch):
    """Force either branch of `_SpectralLinearGram`: mixing by P, or forming the weight."""
    limit = float("inf") if request.param == "mixed" else 0.0
    monkeypatch.setattr(bjorck, "FACTORED_MAX_MULTIPLIER", limit)
    return request.param


@pytest.mark.parametrize("fan_in, fan_out, batch", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_step_equals_the_formed_weight_map(fan_in, fan_out, batch, dtype, branch):
    layer = _layer(fan_in, fan_out, dtype)
    twin = copy.deepcopy(layer)
    x = torch.randn(*batch, fan_in, dtype=dtype)
    weight, u0 = layer.parametrizations.weight.original, layer.parametrizations.weight[0].u
    assert bjorck.factored_linear_applies(x, weight, u0)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = layer(x1)
    expected, expected_u = _formed(twin, x2)
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    y, expected = y.detach(), expected.detach()
    # float64 agrees to rounding; float32 mixes in float32: relative to each tensor's scale
    bound = 1e-13 if dtype == torch.float64 else 2e-6

    def close(a, b):
        assert float((a - b).abs().max() / b.abs().max()) < bound

    assert y.shape == (*batch, fan_out) and y.dtype == dtype
    if branch == "formed":
        assert torch.equal(y, expected)  # the same weight, formed the same way
    close(y, expected)
    close(x1.grad, x2.grad)
    close(weight.grad, twin.parametrizations.weight.original.grad)
    close(layer.bias.grad, twin.bias.grad)
    # u moved once, as the formed path moves it: exactly, but for float32 mixing steps, which
    # take the Gram and the power vectors in float32. Each Gram entry sums max(fan_in, fan_out)
    # float32 products, so the unit vector u moves by rounding of order sqrt(long side)·eps
    # (the order and blocking of those sums depend on the CPU's kernels and threads); 4× that
    # scale keeps a margin without hiding a missed or repeated power step.
    long_side = max(fan_in, fan_out)
    eps32 = torch.finfo(torch.float32).eps
    u_tol = 4 * long_side**0.5 * eps32 if dtype == torch.float32 and branch == "mixed" else 0.0
    torch.testing.assert_close(layer.parametrizations.weight[0].u, expected_u, atol=u_tol, rtol=0)


def _conditioned(shape: tuple[int, int], decades: float, seed: int = 11) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(shape, generator=gen), full_matrices=False)
    return u @ torch.diag(torch.logspace(0, -decades, min(shape))) @ vh * 4


@pytest.mark.parametrize("shape", [(64, 1568), (1568, 64)])
def test_float32_steps_are_as_accurate_as_the_formed_weight(shape):
    """Small singular values get Björck multipliers up to 1.5^15, which would amplify the
    rounding of x·Wᵀ in the mixing: past FACTORED_MAX_MULTIPLIER the step forms the weight.
    Below it (singular values within ~0.6 decades), mixing with a float32 Gram stays within
    2.5× the formed float32 map's distance to float64 (measured: at most 1.9×)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(256, shape[1], generator=gen)
    u = F.normalize(torch.randn(shape[0], generator=gen), dim=0)

    def error(out, reference):
        return float((out.double() - reference).abs().max() / reference.abs().max())

    for decades in (0.0, 0.3, 0.5, 0.6, 2.0, 5.0):
        w = _conditioned(shape, decades)
        reference = F.linear(x.double(), spectral_bjorck(w.double(), u.double())[0])
        formed = error(F.linear(x, spectral_bjorck(w, u)[0]), reference)
        assert error(spectral_bjorck_linear(x, w, None, u)[0], reference) <= 2.5 * formed
        if decades == 5.0:  # mixing there anyway would be 10× off
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(bjorck, "FACTORED_MAX_MULTIPLIER", float("inf"))
                mixed = spectral_bjorck_linear(x, w, None, u)[0]
            assert error(mixed, reference) > 10 * formed


def test_gradcheck_and_forward_derivatives(branch):
    gen = torch.Generator().manual_seed(4)
    for shape in [(34, 50), (50, 34)]:
        w = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(shape[0], generator=gen, dtype=torch.float64, requires_grad=True)
        x = torch.randn(3, shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
        u = F.normalize(torch.randn(shape[0], generator=gen, dtype=torch.float64), dim=0)
        assert bjorck.factored_linear_applies(x, w, u)

        def f(x, w, b, u=u):
            return spectral_bjorck_linear(x, w, b, u)[0]

        assert torch.autograd.gradcheck(f, (x, w, b))
        # forward mode (dual tensors) against torch.func.jvp of the formed map
        tangents = [torch.randn_like(t) for t in (x, w, b)]
        with torch.autograd.forward_ad.dual_level():
            duals = [
                torch.autograd.forward_ad.make_dual(t.detach(), d)
                for t, d in zip((x, w, b), tangents, strict=True)
            ]
            jv = torch.autograd.forward_ad.unpack_dual(f(*duals)).tangent

        def formed(x, w, b, u=u):
            return F.linear(x, spectral_bjorck(w, u)[0], b)

        primals = tuple(t.detach() for t in (x, w, b))
        _, expected = torch.func.jvp(formed, primals, tuple(tangents))
        torch.testing.assert_close(jv, expected, atol=1e-10, rtol=1e-8)


def test_the_formed_weight_is_used_where_the_factored_step_does_not_pay_or_apply():
    layer = _layer(300, 40, torch.float64)
    weight, u = layer.parametrizations.weight.original, layer.parametrizations.weight[0].u
    small = torch.randn(32, 300, dtype=torch.float64)
    large = torch.randn(300, 300, dtype=torch.float64)  # as many rows as the long side
    assert bjorck.factored_linear_applies(small, weight, u)
    assert not bjorck.factored_linear_applies(large, weight, u)
    assert not bjorck.factored_linear_applies(small.float(), weight, u)  # mixed dtypes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bjorck.factored_linear_applies(small, weight, u)
    # torch.func over the inputs takes the formed weight (the vmap rule is the autograd one)
    vmapped = torch.func.vmap(copy.deepcopy(layer))(small[:4])
    looped = torch.stack([copy.deepcopy(layer)(row) for row in small[:4]])
    torch.testing.assert_close(vmapped, looped, atol=1e-12, rtol=0)
    # a large batch, eval mode and parametrize.cached() all give F.linear with the formed weight
    twin = copy.deepcopy(layer)
    assert torch.equal(twin(large), _formed(copy.deepcopy(layer), large)[0])
    twin = copy.deepcopy(layer).eval()
    assert torch.equal(twin(small), F.linear(small, twin.weight, twin.bias))
    twin = copy.deepcopy(layer)
    with parametrize.cached():
        assert torch.equal(twin(small), F.linear(small, twin.weight, twin.bias))


def test_training_keeps_deel_lips_power_vector_across_steps():
    """Steps through the factored path update u as the step-by-step iteration does."""
    layer = _layer(300, 40, torch.float64, seed=1)
    twin = copy.deepcopy(layer)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (layer, twin)]
    x = torch.randn(32, 300, dtype=torch.float64)
    for _ in range(4):
        y = layer(x)
        expected, u = _formed(twin, x)
        with torch.no_grad():
            twin.parametrizations.weight[0].u.copy_(u)
        torch.testing.assert_close(y, expected, atol=1e-10, rtol=1e-10)
        for out, opt in zip((y, expected), opts, strict=True):
            opt.zero_grad()
            out.square().sum().backward()
            opt.step()
    torch.testing.assert_close(
        layer.parametrizations.weight.original,
        twin.parametrizations.weight.original,
        atol=1e-10,
        rtol=1e-10,
    )


@pytest.mark.parametrize("fan_in, fan_out", [(300, 40), (40, 300)])
def test_input_gradient_penalties_match_the_formed_weight(fan_in, fan_out, branch):
    """With create_graph, a step's input gradient depends on the weight as through the formed
    weight: the penalty's gradients are the formed path's. Second derivatives through the
    constraint itself (a weight-gradient penalty) are refused, on both paths, not silently
    missing the eigendecomposition's terms."""
    layer = _layer(fan_in, fan_out, torch.float64)
    twin = copy.deepcopy(layer)
    twin.forward = types.MethodType(nn.Linear.forward, twin)  # the parametrization's weight
    results = []
    for model in (layer, twin):
        x = torch.randn(8, fan_in, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        (g,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()
        weight = model.parametrizations.weight.original
        results.append((g.detach(), weight.grad, model.bias.grad))
    for mine, formed in zip(*results, strict=True):
        torch.testing.assert_close(mine, formed, atol=1e-12, rtol=1e-10)
    for model in (layer, twin):
        weight = model.parametrizations.weight.original
        x = torch.randn(8, fan_in, dtype=torch.float64)
        (g,) = torch.autograd.grad(model(x).square().sum(), weight, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            g.square().sum().backward()
