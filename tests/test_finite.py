"""NaN, ±inf and overflowing inputs are refused by name by certify, evaluate and fit, on a
model trained on real digits, before they give a certificate or touch a weight."""

from __future__ import annotations

import copy

import pytest
import torch

from tradeoff import zoo
from tradeoff.certificates import Certifier, certify, certify_logits
from tradeoff.finite import NonFiniteError
from tradeoff.loop import TrainingDiverged, evaluate, fit
from tradeoff.losses import TauCrossEntropy


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = zoo.create("seed_conv", input_shape=digits.input_shape, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xy = (digits.train.x, digits.train.y)
    fit(model, TauCrossEntropy(5.0), opt, xy, None, epochs=2, batch_size=64, progress=False)
    return model.eval()


def _spoil(x: torch.Tensor, rows: list[int], value: float) -> torch.Tensor:
    x = x.clone()
    x[rows, 0, 3, 4] = value
    return x


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_certify_and_evaluate_refuse_non_finite_pixels(trained, digits, value):
    x, y = _spoil(digits.test.x[:300], [5, 17, 250], value), digits.test.y[:300]
    match = r"3 of 300 inputs hold NaN or ±inf \(samples \[5, 17, 250\]\)"
    with pytest.raises(NonFiniteError, match=match):
        certify(trained, x, batch_size=64)  # indices are the data's, not a batch's
    with pytest.raises(NonFiniteError, match=match):
        evaluate(trained, x, y, batch_size=64)
    clean = certify(trained, digits.test.x[:300])
    assert torch.isfinite(clean).all() and clean.mean() > 0


def test_inputs_that_overflow_the_logits_are_refused(trained, digits):
    """1e30 is finite, but squaring it in the L2-norm pooling is not: the logits are NaN."""
    x, y = _spoil(digits.test.x[:40], [2, 30], 1e30), digits.test.y[:40]
    match = (
        r"logits of 2 of 40 samples \[2, 30\] are NaN or ±inf \(largest \|x\| among them 1e\+30\)"
    )
    with pytest.raises(NonFiniteError, match=match):
        certify(trained, x)
    with pytest.raises(NonFiniteError, match=match):
        evaluate(trained, x, y)


def test_certify_logits_refuses_non_finite_logits_and_constants(trained, digits):
    certifier = Certifier.from_model(trained)
    with torch.no_grad():
        logits = trained(digits.test.x[:10])
    logits[4, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"1 of 10 samples \[4\]"):
        certify_logits(logits, certifier.pair_norms)
    bad = certifier.pair_norms.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        certify_logits(logits[:4], bad)


@pytest.mark.parametrize("split", ["training", "validation", "test"])
def test_fit_refuses_non_finite_data_before_any_step(trained, digits, split):
    model = copy.deepcopy(trained)
    before = copy.deepcopy(model.state_dict())
    data = {s: (digits.test.x[:100], digits.test.y[:100]) for s in ("training", "validation")}
    data["test"] = (digits.test.x[100:200], digits.test.y[100:200])
    data[split] = (_spoil(data[split][0], [7], float("nan")), data[split][1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteError, match=rf"1 of 100 {split} inputs .*\[7\]"):
        fit(model, TauCrossEntropy(5.0), opt, *data.values(), epochs=1, batch_size=32)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


def test_training_batch_whose_logits_overflow_names_its_samples(trained, digits):
    model = copy.deepcopy(trained)
    before = [p.detach().clone() for p in model.parameters()]
    x = _spoil(digits.test.x[:64], [9], 1e30)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDiverged, match=r"1 of 64 samples \[9\].*scale the inputs"):
        fit(
            model, TauCrossEntropy(5.0), opt, (x, digits.test.y[:64]), None, epochs=1, batch_size=64
        )
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_an_empty_batch_has_no_certificates_and_no_error(trained, digits):
    empty = digits.test.x[:0]
    radii = certify(trained, empty)
    assert radii.shape == (0,)
    torch.testing.assert_close(certify(trained, digits.test.x[:5])[:0], radii)
