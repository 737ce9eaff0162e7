"""Tightness is measured: the empirical lower bounds are real slopes of models trained on
digits, never above the sound bounds, exact for linear maps, and the ratios say what the
attacks find (an MLP's certificates are tight, a convolutional model's are not)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from attacks import pgd_l2
from torch import nn

from tradeoff import zoo
from tradeoff.certificates import Certifier, audit, certify, lipschitz_bound
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy
from tradeoff.tightness import empirical_lipschitz, jacobian_norm, margin_slopes


@pytest.fixture(scope="module", params=["seed_mlp", "seed_conv"])
def trained(request, digits):
    """(name, model, fit result) after 3 epochs on digits, with the test split evaluated."""
    torch.manual_seed(0)
    model = zoo.create(request.param, input_shape=digits.input_shape, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    result = fit(
        model,
        TauCrossEntropy(5.0),
        opt,
        (digits.train.x, digits.train.y),
        None,
        (digits.test.x, digits.test.y),
        epochs=3,
        batch_size=64,
        progress=False,
    )
    return request.param, model.eval(), result


def test_jacobian_norm_of_a_linear_map_is_its_spectral_norm():
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(7, 7, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(12, 7, generator=gen, dtype=torch.float64))
    layer = nn.Linear(12, 7).double()
    with torch.no_grad():  # singular values 3, 2.5, ..., 0: the largest is 3
        layer.weight.copy_(u @ torch.diag(torch.linspace(3, 0, 7, dtype=torch.float64)) @ v.t())
    x = torch.rand(3, 12, generator=gen, dtype=torch.float64)
    assert jacobian_norm(layer, x, n_iter=100, generator=gen) == pytest.approx(3.0, rel=1e-9)


def test_the_lower_bound_is_a_slope_the_model_has(trained, digits):
    """A secant of the model along the direction power iteration found reaches the bound."""
    _, model, _ = trained
    x = digits.test.x[:1]
    lower = empirical_lipschitz(model, x, points=1, n_iter=30)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape, generator=gen)
    for _ in range(30):  # the same power iteration, kept here to get its direction
        _, jv = torch.func.jvp(model, (x,), (v / v.norm(),))
        (v,) = torch.func.vjp(model, x)[1](jv)
    v = v / v.norm()
    # The secant of the map itself, in float64: a float32 one adds rounding errors of the
    # outputs divided by the step, which can exceed the bound's last digits.
    exact = copy.deepcopy(model).double()
    x, v = x.double(), v.double()
    with torch.no_grad():
        secant = float((exact(x + 1e-3 * v) - exact(x - 1e-3 * v)).norm() / 2e-3)
    assert secant == pytest.approx(lower, rel=0.05)
    assert secant <= lipschitz_bound(model) * (1 + 1e-5)


def test_fit_logs_the_test_tightness(trained):
    _, _, result = trained
    m = result.test.metrics
    assert 0 < m["lipschitz_lower"] <= m["lipschitz_bound"] * (1 + 1e-6)
    assert m["bound_tightness"] == pytest.approx(m["lipschitz_bound"] / m["lipschitz_lower"])
    assert "lipschitz_lower" not in result.history[-1]  # validation stays cheap


@pytest.mark.slow
def test_audit_ratios_are_bound_over_slope_and_never_below_one(trained, digits):
    _, model, _ = trained
    rows = audit(model, x=digits.test.x[:256], n_iter=20)
    assert [r["layer"] for r in rows[-2:]] == ["model", "margins"]
    for row in rows:
        assert row["empirical"] <= row["bound"] * (1 + 1e-5), row
        assert row["ratio"] == pytest.approx(row["bound"] / row["empirical"])
    with torch.no_grad():
        no_data = audit(model, n_iter=20)
    assert [r["layer"] for r in no_data][-1] == "model"  # margins need samples


@pytest.mark.slow
def test_the_ratios_match_what_the_attack_finds(trained, digits):
    """MLP: tight (PGD flips predictions just outside the certificates). Convolutions: the
    margins' ratio is well above 1, and PGD just outside the certificates flips almost
    nothing, as the ratio says."""
    name, model, _ = trained
    x = digits.test.x[:200]
    rows = {r["layer"]: r for r in audit(model, x=x, n_iter=20)}
    radii = certify(model, x)
    outside = pgd_l2(model, x, 1.1 * radii, steps=40, restarts=1).float().mean()
    if name == "seed_mlp":
        assert rows["model"]["ratio"] < 1.01 and rows["margins"]["ratio"] < 1.01
        assert outside > 0.5
    else:
        assert rows["margins"]["ratio"] > 1.5
        assert outside < 0.05


def test_margin_slopes_follow_the_certificates(trained, digits):
    """Each sample's binding margin has a certified constant no smaller than its gradient."""
    _, model, _ = trained
    x = digits.test.x[:64]
    certifier = Certifier.from_model(model)
    constant, slope = margin_slopes(model, x, certifier.pair_norms)
    assert (slope <= constant * (1 + 1e-5)).all()
    assert math.isfinite(float(constant.max())) and float(slope.min()) > 0
