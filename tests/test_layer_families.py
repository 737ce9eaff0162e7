"""The cpl, sandwich and cayley families end to end: convnets trained briefly on sklearn digits,
their certificates attacked, their layers audited, their rounding bounded, and one real
`tradeoff-train` run each."""

from __future__ import annotations

import copy
import os
import subprocess

import pytest
import torch
from attacks import pgd_l2
from mlflow.tracking import MlflowClient
from torch import nn
from torch.nn.utils import parametrize

from tradeoff import zoo
from tradeoff.certificates import audit, certify
from tradeoff.data import load_dataset
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy
from tradeoff.nn import CPLConv2d, CPLLinear, SandwichConv2d, SandwichLinear
from tradeoff.nn.cayley import FourierConv2d
from tradeoff.rounding import forward_error

pytestmark = pytest.mark.slow
NEW = ("cpl", "sandwich", "cayley")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_size=0, seed=0)


@pytest.fixture(scope="module", params=NEW)
def trained(request, digits):
    torch.manual_seed(0)
    model = zoo.create(
        "convnet",
        input_shape=digits.input_shape,
        num_classes=10,
        layer=request.param,
        width=8,
        depth=2,
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = (digits.train.x, digits.train.y)
    fit(model, TauCrossEntropy(tau=5.0), opt, data, None, epochs=4, batch_size=64, progress=False)
    return model.eval()


def test_pgd_inside_certificates_never_flips(trained, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    radii = certify(trained, x)
    assert (trained(x).argmax(1) == y).float().mean() > 0.5  # the model learnt something
    assert float(radii.mean()) > 0.02  # and the certificates are not trivially zero
    flipped = pgd_l2(trained, x, 0.999 * radii, steps=40)
    assert not flipped.any(), f"{int(flipped.sum())} predictions changed inside a certificate"
    outside = pgd_l2(trained, x, 8 * radii + 0.5, steps=30, restarts=1)
    assert outside.float().mean() > 0.2  # the same attack does find adversarials further out


def test_audit_reports_the_family_layers_within_their_bounds(trained):
    rows = audit(trained, n_iter=20)
    kinds = {row["type"] for row in rows}
    assert kinds & {"CPLConv2d", "SandwichConv2d", "CayleyConv2d"}
    for row in rows:
        assert row["bound"] >= row["empirical"] * (1 - 1e-5), row


def _same_map_in_float64(model: nn.Module) -> nn.Module:
    """A float64 copy computing the map the float32 model is bounded for: the blocks, steps and
    scalings the float32 model uses, upcast (not recomputed in float64)."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        for mine, theirs in list(zip(model.modules(), exact.modules(), strict=True)):
            if isinstance(mine, FourierConv2d):
                blocks = mine.blocks().to(torch.complex128)
                theirs.compute_blocks = lambda b=blocks: b
            if isinstance(mine, (SandwichConv2d, SandwichLinear)):
                scalings = tuple(s.double() for s in mine.scalings())
                theirs.scalings = lambda s=scalings: s
            if isinstance(mine, SandwichLinear):
                q = mine.q().double()
                theirs.q = lambda q=q: q
            if isinstance(mine, (CPLConv2d, CPLLinear)):
                step = mine._step().double()
                theirs._step = lambda t=step: t
            if parametrize.is_parametrized(mine, "weight"):  # the Cayley head
                weight = mine.weight.double()
                parametrize.remove_parametrizations(theirs, "weight", leave_parametrized=False)
                theirs.weight.copy_(weight)
    return exact.eval()


def test_the_rounding_bound_covers_float32_against_the_same_map_in_float64(trained, digits):
    error = forward_error(trained)
    exact = _same_map_in_float64(trained)
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 10.0, 100.0):
        x = digits.test.x[:64] * scale + torch.rand(64, 1, 8, 8, generator=gen)
        with torch.no_grad():
            gap = (trained(x).double() - exact(x.double())).flatten(1).norm(dim=1)
        allowed = error.offset + error.slope * x.double().flatten(1).norm(dim=1)
        assert (gap <= allowed).all(), float((gap / allowed).max())
        assert float(gap.max()) > 0  # float32 does round: the comparison is not vacuous


@pytest.mark.parametrize("layer", NEW)
def test_each_family_trains_through_the_real_cli(layer, tmp_path):
    args = ["model=convnet", f"model.layer={layer}", "data=digits", "train.epochs=1"]
    env = {**os.environ, "TRADEOFF_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        ["tradeoff-train", *args, "train.threads=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("adhoc").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.layer"] == layer
    assert 0 <= run.data.metrics["test/mean_certificate"] < 10  # digits' diameter is 8
