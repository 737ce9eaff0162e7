"""Skew-orthogonal convolutions (SOC): the map they compute, measured independently in float64
against the bound they report, with few terms (where the truncation shows) and many."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from attacks import pgd_l2
from lipschitz_measure import jacobian_norm, measured_linear_norm
from torch import nn

from tradeoff import nn as lnn
from tradeoff import zoo
from tradeoff.bounds import layer_bounds
from tradeoff.certificates import audit, certify, lipschitz_bound
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy
from tradeoff.nn.soc import SOCConv2d, soc_conv, soc_linear, truncated_exp_bound
from tradeoff.rounding import forward_error


class ExactSOC(nn.Module):
    """The map an eval-mode `SOCConv2d` stands for, written out with the kernel it uses as a
    buffer (float32 values, exact in float64 after `.double()`), without the layer's code."""

    def __init__(self, layer: SOCConv2d) -> None:
        super().__init__()
        self.register_buffer("kernel", layer.kernel_in_use().clone())
        self.register_buffer("bias", layer.bias.detach().clone())
        self.stride, self.terms, self.out = layer.stride, layer.eval_terms, layer.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if s > 1:
            x = F.pad(x, (0, -x.shape[-1] % s, 0, -x.shape[-2] % s))
            x = F.pixel_unshuffle(x, s)
        x = F.pad(x, (0, 0, 0, 0, 0, self.kernel.shape[0] - x.shape[1]))
        total, power = x, x
        for k in range(1, self.terms):
            power = F.conv2d(power, self.kernel, padding=self.kernel.shape[-1] // 2)
            total = total + power / math.factorial(k)
        return total[:, : self.out] + self.bias.view(1, -1, 1, 1)


def _randomized(layer: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return layer


def _trained_a_little(layer: SOCConv2d, shape: tuple[int, ...], steps: int = 3) -> SOCConv2d:
    """A few Adam steps, so the power-iteration vectors and the weight move as in training."""
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    return layer.eval()


CASES = [
    # (in, out, kernel, stride, shape, terms, weight scale)
    (4, 4, 3, 1, (4, 7, 9), 13, 1.0),
    (3, 5, 3, 1, (3, 6, 6), 13, 1.0),
    (6, 3, 5, 1, (6, 5, 7), 6, 1.0),
    (2, 6, 3, 2, (2, 7, 9), 13, 1.0),
    (4, 4, 1, 1, (4, 3, 3), 6, 1.0),
    (4, 4, 3, 1, (4, 6, 6), 2, 1.0),  # two terms: I + A, norm √(1 + ‖A‖²)
    (4, 4, 3, 1, (4, 6, 6), 3, 1.0),
    (3, 3, 3, 1, (3, 5, 5), 4, 1.0),
]


@pytest.mark.parametrize("c_in,c_out,k,s,shape,terms,scale", CASES)
def test_norm_measured_in_float64_never_exceeds_the_bound(c_in, c_out, k, s, shape, terms, scale):
    torch.manual_seed(0)
    layer = SOCConv2d(c_in, c_out, k, s, terms=terms, eval_terms=terms)
    layer = _trained_a_little(_randomized(layer, scale), shape)
    bound = lipschitz_bound(nn.Sequential(layer).eval(), shape)
    assert bound == layer.lipschitz_bound(shape)
    exact = ExactSOC(layer)
    dense = jacobian_norm(exact, shape, points=1)
    power = measured_linear_norm(copy.deepcopy(exact), shape)
    assert dense <= bound and power <= bound, (dense, power, bound)
    if terms <= 3:  # the truncation shows, and the bound follows it
        assert dense > 1.02 and bound <= 1.25 * dense
    else:
        assert bound <= dense * 1.05 + 1e-3


def test_the_float32_layer_computes_the_exact_map_it_is_bounded_for():
    torch.manual_seed(0)
    layer = _trained_a_little(SOCConv2d(3, 5, 3, 2), (3, 9, 8))
    x = torch.randn(4, 3, 9, 8)
    exact = ExactSOC(layer).double()
    with torch.no_grad():
        torch.testing.assert_close(layer(x).double(), exact(x.double()), atol=1e-5, rtol=1e-5)


def test_the_kernel_in_use_is_exactly_skew_so_the_operator_is():
    torch.manual_seed(0)
    layer = _trained_a_little(SOCConv2d(4, 4, 3), (4, 5, 6))
    kernel = layer.kernel_in_use()
    assert torch.equal(kernel, -kernel.transpose(0, 1).flip(2, 3))
    n = 4 * 5 * 6
    basis = torch.eye(n, dtype=torch.float64).view(n, 4, 5, 6)
    matrix = F.conv2d(basis, kernel.double(), padding=1).view(n, n)
    assert torch.equal(matrix, -matrix.t())


def test_many_terms_compute_the_matrix_exponential():
    torch.manual_seed(0)
    layer = _trained_a_little(SOCConv2d(3, 3, 3, terms=6, eval_terms=20), (3, 5, 5))
    n = 3 * 5 * 5
    basis = torch.eye(n, dtype=torch.float64).view(n, 3, 5, 5)
    generator = F.conv2d(basis, layer.kernel_in_use().double(), padding=1).view(n, n).t()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expected = (torch.linalg.matrix_exp(generator) @ x.view(2, n).t()).t().view_as(x)
    with torch.no_grad():
        got = layer(x.float()) - layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("terms", [1, 2, 3, 4, 6, 13])
@pytest.mark.parametrize("rho", [0.3, 1.0, 2.5])
def test_truncated_exp_bound_covers_the_series_on_skew_matrices(terms, rho):
    gen = torch.Generator().manual_seed(terms)
    t = torch.linspace(0, rho, 20001, dtype=torch.float64)
    series = sum((1j * t) ** k / math.factorial(k) for k in range(terms))
    exact_max = float(series.abs().max())
    bound = truncated_exp_bound(rho, terms)
    assert exact_max <= bound <= exact_max * (1 + 1e-4) + 1e-5
    for _ in range(5):
        w = torch.randn(12, 12, generator=gen, dtype=torch.float64)
        skew = w - w.t()
        skew *= rho / torch.linalg.matrix_norm(skew, ord=2)
        poly = sum(torch.linalg.matrix_power(skew, k) / math.factorial(k) for k in range(terms))
        assert float(torch.linalg.matrix_norm(poly, ord=2)) <= bound


def test_a_kernel_not_exactly_skew_falls_back_to_the_plain_series_bound():
    torch.manual_seed(0)
    layer = SOCConv2d(3, 3, 3, terms=4, eval_terms=4).eval()
    skew_bound = layer.lipschitz_bound((3, 6, 6))
    kernel = layer.kernel_in_use()
    layer.kernel_in_use = lambda: kernel + 1e-3 * torch.rand_like(kernel)
    rho = layer.series_norm((3, 6, 6))
    assert layer.lipschitz_bound((3, 6, 6)) >= sum(rho**k / math.factorial(k) for k in range(4))
    assert layer.lipschitz_bound((3, 6, 6)) > skew_bound


def test_dense_and_kernel_equals_stride_layers_are_orthogonal_standard_layers():
    torch.manual_seed(0)
    dense = soc_linear(20, 7)
    assert type(dense).__bases__[0] is nn.Linear
    w = dense.weight.detach().double()
    torch.testing.assert_close(w @ w.t(), torch.eye(7, dtype=torch.float64), atol=1e-5, rtol=0)
    down = soc_conv(3, 6, 2, 2, (7, 9))
    assert [type(m).__name__ for m in down] == ["ZeroPad2d", "ParametrizedConv2d"]
    model = nn.Sequential(down[0], down[1])
    assert lipschitz_bound(model, (3, 7, 9)) <= 1 + 1e-5
    assert measured_linear_norm(model, (3, 7, 9)) <= lipschitz_bound(model, (3, 7, 9))


def test_export_gives_plain_convolutions_with_the_same_outputs():
    torch.manual_seed(0)
    model = zoo.create("convnet", input_shape=(3, 7, 9), num_classes=5, layer="soc", width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    model.eval()
    from tradeoff.export import export_vanilla

    plain = export_vanilla(model)
    x = torch.rand(16, 3, 7, 9)
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)
    kinds = {type(m) for m in plain.modules() if not isinstance(m, nn.Sequential)}
    assert kinds <= {nn.Conv2d, nn.Linear, nn.ZeroPad2d, nn.PixelUnshuffle, nn.Flatten, lnn.MaxMin}
    strided = SOCConv2d(2, 3, 3, 2, eval_terms=1).eval()
    torch.testing.assert_close(
        strided.vanilla_export((2, 5, 5))(x[:, :2, :5, :5]), strided(x[:, :2, :5, :5])
    )


def test_every_layer_of_a_soc_convnet_measures_within_its_bound():
    torch.manual_seed(0)
    model = zoo.create("convnet", input_shape=(1, 8, 8), num_classes=5, layer="soc", width=2)
    model = _randomized(model, 1.0, seed=3)
    for row in layer_bounds(model):
        module = row.module
        if isinstance(module, SOCConv2d):
            module = ExactSOC(module)
        measured = jacobian_norm(module, row.input_shape, points=1)
        assert measured <= row.bound, (row.name, measured, row.bound)


def rounding_within_bound(layer: nn.Module, exact: nn.Module, shape: tuple[int, ...]) -> None:
    """The float32 outputs of `layer` stay within `forward_error`'s offset + slope·‖x‖ of its
    `exact` float64 map, over inputs of every scale, and the bound is not useless."""
    error = forward_error(nn.Sequential(layer).eval(), shape)
    exact = exact.double()
    gen = torch.Generator().manual_seed(0)
    closest = 0.0
    for scale in (1e-3, 1.0, 1e3):
        x = scale * torch.randn(64, *shape, generator=gen)
        with torch.no_grad():
            gap = (layer(x).double() - exact(x.double())).flatten(1).norm(dim=1)
        allowed = error.offset + error.slope * x.double().flatten(1).norm(dim=1)
        assert (gap <= allowed).all()
        closest = max(closest, float((gap / allowed).max()))
    assert closest > 1e-3  # a worst case, not a useless one


def test_the_rounding_bound_covers_float32_against_the_exact_map():
    torch.manual_seed(0)
    layer = _trained_a_little(SOCConv2d(3, 4, 3, 2), (3, 7, 8))
    rounding_within_bound(layer, ExactSOC(layer), (3, 7, 8))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kernel_size": 2}, "kernel_size must be odd"),
        ({"terms": 0}, "terms must be an integer >= 1"),
        ({"eval_terms": 2.5}, "eval_terms must be an integer >= 1"),
        ({"correction": 0.0}, "correction must be > 0"),
    ],
)
def test_bad_options_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SOCConv2d(3, 3, **kwargs)


def test_the_zoo_option_sets_the_terms_and_others_are_refused():
    model = zoo.create("convnet", input_shape=(1, 8, 8), layer="soc", width=2, soc_terms=3)
    assert {m.terms for m in model if isinstance(m, SOCConv2d)} == {3}
    with pytest.raises(ValueError, match=r"layer=.soc. does not take.*soc_terms=6"):
        zoo.create("convnet", input_shape=(1, 8, 8), layer="soc", lot_iterations=3)


# -- trained models, soc and lot alike: certificates attacked, layers audited -------------------


@pytest.fixture(scope="module", params=["soc", "lot"])
def trained(request, digits):
    torch.manual_seed(0)
    model = zoo.create(
        "convnet",
        input_shape=digits.input_shape,
        num_classes=10,
        layer=request.param,
        width=4,
        depth=2,
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(
        model,
        TauCrossEntropy(tau=5.0),
        opt,
        (digits.train.x, digits.train.y),
        None,
        epochs=3,
        batch_size=128,
        progress=False,
    )
    return model.eval()


@pytest.mark.slow
def test_certificates_of_models_trained_on_digits_survive_pgd(trained, digits):
    x, y = digits.test.x[:120], digits.test.y[:120]
    radii = certify(trained, x)
    assert (trained(x).argmax(1) == y).float().mean() > 0.5
    assert float(radii.mean()) > 0.02
    flipped = pgd_l2(trained, x, 0.999 * radii)
    assert not flipped.any(), f"{int(flipped.sum())} predictions changed inside a certificate"
    assert pgd_l2(trained, x, 8 * radii + 0.5, steps=40, restarts=1).float().mean() > 0.2


@pytest.mark.slow
def test_audit_reports_every_layer_with_its_bound_above_what_is_measured(trained, digits):
    rows = audit(trained, x=digits.test.x[:32], n_iter=20)
    kinds = {row["type"] for row in rows}
    assert kinds & {"ParametrizedSOCConv2d", "ParametrizedLOTConv2d"}
    for row in rows:
        assert row["bound"] >= row["empirical"] * (1 - 1e-9), row
    whole = next(row for row in rows if row["layer"] == "model")
    assert 0.3 < whole["bound"] <= 1 + 1e-4
