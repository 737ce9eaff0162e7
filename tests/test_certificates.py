"""Certificates attacked: a model trained on real digits is attacked inside its certificates."""

from __future__ import annotations

import math

import pytest
import torch
from attacks import pgd_l2
from torch import nn

from tradeoff import zoo
from tradeoff.certificates import (
    Certifier,
    NotLipschitzError,
    audit,
    certified_robust_accuracy,
    certify,
    lipschitz_bound,
    summarize,
)
from tradeoff.data import load_dataset
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_size=0, seed=0)


@pytest.fixture(scope="module", params=["seed_conv", "sll_net"])
def trained(request, digits):
    torch.manual_seed(0)
    opts = {"stages": 1, "width": 8} if request.param == "sll_net" else {}
    model = zoo.create(request.param, input_shape=digits.input_shape, num_classes=10, **opts)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit(
        model,
        TauCrossEntropy(tau=5.0),
        opt,
        (digits.train.x, digits.train.y),
        None,
        epochs=6,
        batch_size=64,
        progress=False,
    )
    return model.eval()


def test_pgd_inside_certificates_never_flips(trained, digits):
    x, y = digits.test.x[:300], digits.test.y[:300]
    radii = certify(trained, x)
    assert (trained(x).argmax(1) == y).float().mean() > 0.5  # the model learnt something
    assert float(radii.mean()) > 0.02  # and the certificates are not trivially zero
    flipped = pgd_l2(trained, x, 0.999 * radii)
    assert not flipped.any(), f"{int(flipped.sum())} predictions changed inside a certificate"


def test_pgd_outside_certificates_does_flip(trained, digits):
    """The same attack is strong enough to matter: with a larger budget it finds adversarials."""
    x = digits.test.x[:300]
    radii = certify(trained, x)
    flipped = pgd_l2(trained, x, 8 * radii + 0.5, steps=40, restarts=1)
    assert flipped.float().mean() > 0.2


def test_margin_gradients_within_bound(trained, digits):
    x = digits.test.x[:250].clone().requires_grad_(True)
    bound = lipschitz_bound(trained)
    logits = trained(x)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        k = torch.randint(0, 10, (len(x),), generator=gen)
        j = (k + torch.randint(1, 10, (len(x),), generator=gen)) % 10
        margin = logits.gather(1, k[:, None]) - logits.gather(1, j[:, None])
        (grad,) = torch.autograd.grad(margin.sum(), x, retain_graph=True)
        assert float(grad.flatten(1).norm(dim=1).max()) <= math.sqrt(2) * bound


def test_certify_matches_the_seed_formula_computed_by_hand(trained, digits):
    x = digits.test.x[:20]
    radii = certify(trained, x)
    body = nn.Sequential(*list(trained)[:-1])
    k_body = lipschitz_bound(body, digits.input_shape)
    w = trained[-1].weight.detach().double()
    f = trained(x).detach().double()
    # The logits at x and at x' are each off the exact ones by at most e(x) = a + b·‖x‖ and
    # e(x') ≤ a + b·(‖x‖ + r): the margin loses 2√2·e(x), the pair norm gains √2·b.
    cert = Certifier.from_model(trained)
    a, b = cert.rounding_offset, cert.rounding_slope
    assert 0 < a < 1e-2 and 0 < b < 1e-2
    for i in range(len(x)):
        k = int(f[i].argmax())
        best, pair = math.inf, math.inf
        rounding = 2 * math.sqrt(2) * (a + b * float(x[i].double().norm()))
        for j in range(10):
            if j != k:
                norm = float((w[k] - w[j]).norm()) * k_body
                best = min(best, (float(f[i, k] - f[i, j]) - rounding) / (norm + math.sqrt(2) * b))
                pair = min(pair, norm)
        best = max(best, 0.0)
        # The logits are float32 and two forward passes may round them differently (thread
        # count, batch split, CPU kernels): a margin moves by a few ulps of the largest logit,
        # which is a large relative error for a small margin. 8 ulps bound that drift; the
        # relative term covers REL_SLACK (1e-6) and the float32 division.
        drift = 8 * torch.finfo(torch.float32).eps * float(f[i].abs().max()) / pair
        assert float(radii[i]) == pytest.approx(best, rel=1e-5, abs=drift)


def test_certifier_reuses_constants_and_keeps_mode(trained, digits):
    x = digits.test.x[:64]
    trained.train()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    radii = certify(trained, x)
    assert trained.training
    for key, value in trained.state_dict().items():  # power-iteration vectors included
        torch.testing.assert_close(value, before[key])
    trained.eval()
    cert = Certifier.from_model(trained)
    torch.testing.assert_close(cert.radii(trained(x), x), radii)


def test_certificate_without_linear_head_uses_sqrt2():
    torch.manual_seed(0)
    model = zoo.create("seed_mlp", input_shape=(1, 4, 4), num_classes=3)
    model.append(nn.ReLU())  # the head is no longer linear
    model.input_shape = (1, 4, 4)
    x = torch.rand(8, 1, 4, 4)
    f = model.eval()(x)
    top2 = f.topk(2, dim=1).values.double()
    cert = Certifier.from_model(model)
    a, b = cert.rounding_offset, cert.rounding_slope
    rounding = 2 * math.sqrt(2) * (a + b * x.flatten(1).double().norm(dim=1))
    margin = top2[:, 0] - top2[:, 1] - rounding
    expected = margin / (math.sqrt(2) * (lipschitz_bound(model) + b))
    torch.testing.assert_close(certify(model, x), expected.float())


def test_metrics_on_a_hand_example():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 0, 1])
    radii = torch.tensor([0.2, 0.6, 1.2, 0.05])
    m = summarize(logits, y, radii, eps=(0.1, 1.0))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mean_certificate"] == pytest.approx((0.2 + 0.6 + 1.2 + 0.05) / 4)
    assert m["mean_certificate_correct"] == pytest.approx((0.2 + 1.2 + 0.05) / 4)
    assert m["cra_eps_0.1"] == pytest.approx(0.5)
    assert m["cra_eps_1"] == pytest.approx(0.25)
    correct = logits.argmax(1) == y
    assert certified_robust_accuracy(radii, correct, [0.1, 1.0]) == [0.5, 0.25]


@pytest.mark.parametrize(
    "bad", [nn.BatchNorm2d(16), nn.Dropout(0.1), nn.LayerNorm([16, 8, 8]), nn.GELU()]
)
def test_not_lipschitz_modules_are_refused(bad):
    model = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10)
    model.insert(1, bad)
    with pytest.raises(NotLipschitzError, match=type(bad).__name__):
        lipschitz_bound(model)
    with pytest.raises(NotLipschitzError):
        certify(model, torch.rand(2, 1, 8, 8))


def test_sequential_with_custom_forward_is_refused():
    class Skip(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    with pytest.raises(NotLipschitzError, match=r"overrides Sequential\.forward"):
        lipschitz_bound(Skip(nn.Linear(4, 4)), (4,))


def test_audit_reports_every_layer_and_tight_linear_bounds(trained, digits):
    rows = audit(trained, n_iter=30)
    leaves = [
        m for m in trained.modules() if not list(m.children()) or hasattr(m, "lipschitz_bound")
    ]
    assert len(rows) >= len(list(trained)) + 1
    assert rows[-1]["layer"] == "model"
    for row in rows:
        assert row["bound"] >= row["empirical"] * (1 - 1e-5)
    for row in rows[:-1]:
        if "Linear" in row["type"] or "Conv" in row["type"]:
            assert row["ratio"] < 1.1  # exact norms for linear maps, up to the power iteration
    assert leaves
