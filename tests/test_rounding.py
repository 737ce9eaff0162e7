"""Certificates hold at the precision actually used: float32 rounding of the logits is bounded
and taken off the margins, and precisions whose rounding is not bounded are refused (issue 20)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.certificates import Certifier, PrecisionError, certify
from tradeoff.export import export_vanilla
from tradeoff.loop import evaluate
from tradeoff.rounding import forward_error


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10).eval()


def _boundary_pairs(model: nn.Module, a: torch.Tensor, b: torch.Tensor, steps: int = 64):
    """Bisect each segment a→b (differently classified ends) until its two float32 ends are
    adjacent on the segment: no float32 point of it lies between them."""
    lo = torch.zeros(len(a), dtype=torch.float64)
    hi = torch.ones(len(a), dtype=torch.float64)
    a64, step = a.double(), b.double() - a.double()

    def at(t: torch.Tensor) -> torch.Tensor:
        return (a64 + t.view(-1, *[1] * (a.ndim - 1)) * step).float()

    with torch.no_grad():
        label = model(a).argmax(1)
        for _ in range(steps):  # 2^-64 of the segment: far below one float32 step of a pixel
            mid = (lo + hi) / 2
            same = model(at(mid)).argmax(1) == label
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return at(lo), at(hi)


def test_float32_certificates_hold_between_adjacent_float32_inputs():
    """Two float32 inputs a few ulps apart with different classes: the certificate of the one
    must not reach the other. With exact-arithmetic radii (no rounding term) it does."""
    exact_violations = 0
    for seed in (0, 1):
        model = _model(seed)
        x = 4 * torch.randn(1000, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            pred = model(x).argmax(1)
        usual = pred == pred.mode().values
        others = x[~usual]
        lo, hi = _boundary_pairs(model, x[usual][: len(others)], others)
        with torch.no_grad():
            logits = model(lo)
            assert (logits.argmax(1) != model(hi).argmax(1)).all()
        distance = (hi.double() - lo.double()).flatten(1).norm(dim=1)
        radii = certify(model, lo).double()
        assert (radii <= distance).all(), f"{int((radii > distance).sum())} radii reach across"
        cert = Certifier.from_model(model)
        exact = dataclasses.replace(cert, rounding_offset=0.0, rounding_slope=0.0)
        exact_violations += int((exact.radii(logits, lo).double() > distance).sum())
    assert exact_violations > 0  # the test can see the failure it guards against


def _plain_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1, padding_mode="circular"),
        lnn.GroupSort2(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        lnn.ScaledL2NormPool2d(2),
        nn.Conv2d(6, 8, 2, padding="same", padding_mode="replicate"),
        lnn.Householder(8),
        nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
        nn.LeakyReLU(0.3),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 32),
        nn.Sigmoid(),
        nn.Linear(32, 5),
    )


def _sll_export() -> nn.Module:
    torch.manual_seed(0)
    model = zoo.create("sll_net", input_shape=(1, 8, 8), num_classes=5, stages=1, width=4)
    return export_vanilla(model.eval())


@pytest.mark.parametrize("make,shape", [(_plain_model, (2, 11, 11)), (_sll_export, (1, 8, 8))])
def test_the_rounding_bound_covers_float32_against_float64(make, shape):
    """The same weights in float64 compute (nearly) the exact map: the float32 logits stay
    within offset + slope·‖x‖ of them, over inputs of every scale."""
    model = make().eval()
    error = forward_error(model, shape)
    exact = copy.deepcopy(model).double()
    gen = torch.Generator().manual_seed(0)
    closest = 0.0
    for scale in (1e-3, 1.0, 1e3):
        x = scale * torch.randn(256, *shape, generator=gen)
        with torch.no_grad():
            gap = (model(x).double() - exact(x.double())).flatten(1).norm(dim=1)
        allowed = error.offset + error.slope * x.double().flatten(1).norm(dim=1)
        assert (gap <= allowed).all()
        closest = max(closest, float((gap / allowed).max()))
    assert closest > 1e-4  # a worst case, so far above typical errors, but not useless


def test_reduced_float32_matmul_precision_is_seen():
    model = zoo.create("seed_mlp", input_shape=(1, 8, 8), num_classes=10)
    ieee = forward_error(model).slope
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # products may round their inputs to bf16
        assert forward_error(model).slope > 100 * ieee
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_refused(dtype):
    model, x = _model(), torch.rand(4, 1, 8, 8)
    with pytest.raises(PrecisionError, match=rf"{dtype}.*float32"):
        certify(model.to(dtype), x.to(dtype))
    with pytest.raises(PrecisionError, match=str(dtype)):
        Certifier.from_model(model)


def test_autocast_is_refused_where_radii_are_returned():
    model, x, y = _model(), torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(PrecisionError, match=r"autocast.*bfloat16.*float32"):
            certify(model, x)
        with pytest.raises(PrecisionError, match="autocast"):
            evaluate(model, x, y)
        logits = model(x)
    cert = Certifier.from_model(model)
    with pytest.raises(PrecisionError, match=r"bfloat16.*float32"):
        cert.radii(logits, x)


def test_a_layer_that_vouches_for_its_bound_must_bound_its_rounding_too():
    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

        def lipschitz_bound(self, input_shape):
            return 2.0

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), Doubler())
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(TypeError, match=r"layer '2' \(Doubler\).*forward_error"):
        certify(model, x)
    Doubler.forward_error = lambda self, shape, u: (u * 2, 0.0)  # one rounding: exact, here
    assert (certify(model, x) >= 0).all()
