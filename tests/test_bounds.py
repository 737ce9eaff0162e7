"""What `lipschitz_bound` accepts, it bounds for what the module computes: user-built layers
with every option, checked against their float64 Jacobian norm, and what it cannot bound is
refused by name, by `certify` and `Certifier` too (issue 20)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lipschitz_measure import jacobian_norm, max_pool_constant
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from tradeoff import zoo
from tradeoff.bounds import NotLipschitzError, layer_bounds, lipschitz_bound
from tradeoff.certificates import Certifier, audit, certify

FAST = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
MANY = settings(FAST, max_examples=400, derandomize=False)


def _bound(layer: nn.Module, shape: tuple[int, ...]) -> float:
    return lipschitz_bound(nn.Sequential(layer), shape)


def _runs(layer: nn.Module, shape: tuple[int, ...]) -> bool:
    try:
        with torch.no_grad():
            layer(torch.zeros(1, *shape))
    except (RuntimeError, ValueError):
        return False
    return True


# -- the measured cases of issue 20 -------------------------------------------------------------


def _ones_circular_conv() -> nn.Conv2d:
    conv = nn.Conv2d(1, 1, 1, padding=1, padding_mode="circular", bias=False)
    nn.init.ones_(conv.weight)
    return conv


def _seeded(make):
    def build():
        torch.manual_seed(0)
        return make()

    return build


ISSUE_CASES = [
    # (layer, input shape, its exact norm as measured in the issue)
    (lambda: nn.MaxPool2d(2, stride=2, dilation=2), (1, 6, 6), 1.414),
    (lambda: nn.AvgPool2d(2, divisor_override=1), (1, 6, 6), 2.0),
    (lambda: nn.AvgPool2d(2, ceil_mode=True), (1, 7, 7), 1.0),
    (lambda: nn.AvgPool2d(2, 2, padding=1, count_include_pad=False), (1, 6, 6), 1.0),
    (_ones_circular_conv, (1, 4, 4), 2.0),
    (_seeded(lambda: nn.Conv2d(2, 2, 3, 2, 1, padding_mode="circular")), (2, 7, 7), 0.803),
    (_seeded(lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")), (2, 2, 2), 0.96),
]


@pytest.mark.parametrize("make,shape,reported", ISSUE_CASES)
def test_the_issues_user_built_layers_are_bounded(make, shape, reported):
    layer = make()
    measured = jacobian_norm(layer, shape)
    if isinstance(layer, nn.MaxPool2d):
        measured = max(measured, max_pool_constant(layer, shape))
    assert measured >= reported * 0.999 - 0.02  # the issue's figure, or more
    assert _bound(layer, shape) >= measured * (1 - 1e-9)


def test_a_subclass_with_another_forward_is_refused():
    class FiveTanh(nn.Tanh):
        def forward(self, x):
            return 5 * torch.tanh(x)

    with pytest.raises(NotLipschitzError, match=r"FiveTanh.*subclasses Tanh"):
        _bound(FiveTanh(), (4,))


def test_a_subclass_may_vouch_for_its_own_bound():
    class FiveTanh(nn.Tanh):
        def forward(self, x):
            return 5 * torch.tanh(x)

        def lipschitz_bound(self, input_shape):
            return 5.0

    assert _bound(FiveTanh(), (4,)) == 5.0


def test_a_forward_hook_is_refused_and_the_recorder_is_not():
    relu = nn.ReLU()
    handle = relu.register_forward_hook(lambda mod, args, out: 7 * out)
    with pytest.raises(NotLipschitzError, match=r"layer '0' \(ReLU\) carries a forward hook"):
        _bound(relu, (4,))
    handle.remove()
    pre = relu.register_forward_pre_hook(lambda mod, args: (7 * args[0],))
    with pytest.raises(NotLipschitzError, match="forward hook"):
        _bound(relu, (4,))
    pre.remove()
    assert _bound(relu, (4,)) == 1.0  # record_input_shapes' own pre-hooks are not counted


def test_a_global_forward_hook_is_refused():
    handle = register_module_forward_hook(lambda mod, args, out: out)
    try:
        with pytest.raises(NotLipschitzError, match="global module forward hook"):
            _bound(nn.ReLU(), (4,))
    finally:
        handle.remove()
    assert _bound(nn.ReLU(), (4,)) == 1.0


def test_a_method_replaced_on_the_instance_is_refused():
    relu = nn.ReLU()
    relu.forward = lambda x: 7 * torch.relu(x)
    with pytest.raises(NotLipschitzError, match="replaces its method 'forward'"):
        _bound(relu, (4,))


class ScaledInput(nn.Sequential):
    """A container whose forward is not the composition of its children."""

    def forward(self, x):
        return super().forward(10 * x)


def test_a_container_with_another_forward_is_refused_by_certify_too():
    torch.manual_seed(0)
    model = ScaledInput(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    model.input_shape = (1, 4, 4)
    x = torch.rand(5, 1, 4, 4)
    for call in (
        lambda: lipschitz_bound(model),
        lambda: certify(model, x),
        lambda: Certifier.from_model(model),
        lambda: audit(model),
    ):
        with pytest.raises(NotLipschitzError, match=r"ScaledInput overrides Sequential\.forward"):
            call()


def test_the_head_is_the_last_map_applied_whatever_indexing_returns():
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)]
    decoy = nn.Linear(8, 3)
    nn.init.zeros_(decoy.weight)  # as a head, it would make every radius infinite

    class Indexed(nn.Sequential):
        def __getitem__(self, idx):
            return decoy

    x = torch.rand(6, 1, 4, 4)
    flat = certify(nn.Sequential(*layers), x)
    torch.testing.assert_close(certify(Indexed(*layers), x), flat)
    nested = nn.Sequential(nn.Sequential(*layers[:3]), nn.Sequential(layers[3]))
    torch.testing.assert_close(certify(nested, x), flat)


def test_parametrized_layers_and_zoo_models_are_accepted():
    linear = nn.utils.parametrizations.orthogonal(nn.Linear(6, 6))
    assert _bound(linear, (6,)) == pytest.approx(1.0, rel=1e-5)
    model = zoo.create("seed_conv", input_shape=(1, 8, 8), num_classes=10)
    rows = layer_bounds(model)
    assert [r.name for r in rows] == [str(i) for i in range(len(model))]


@pytest.mark.parametrize(
    "layer,shape,option",
    [
        (nn.Flatten(0), (4,), "start_dim=0"),
        (nn.MaxPool2d(2, return_indices=True), (1, 4, 4), "return_indices=True"),
        (nn.ConvTranspose2d(2, 2, 3, stride=2), (2, 4, 4), r"stride=\(2, 2\)"),
        (nn.ConvTranspose2d(2, 2, 3, output_padding=0, groups=2), (2, 4, 4), "groups=2"),
    ],
)
def test_uncovered_options_are_refused_by_name(layer, shape, option):
    with pytest.raises(NotLipschitzError, match=option):
        _bound(layer, shape)


# -- every accepted configuration against its Jacobian (property tests) -------------------------


@st.composite
def convolutions(draw) -> tuple[nn.Conv2d, tuple[int, int, int]]:
    mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    groups = draw(st.sampled_from([1, 2]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
    else:
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    conv = nn.Conv2d(
        groups * draw(st.integers(1, 2)),
        groups * draw(st.integers(1, 2)),
        kernel,
        stride,
        padding,
        dilation,
        groups,
        padding_mode=mode,
    )
    return conv, (conv.in_channels, *size)


def _check_convolution(conv: nn.Conv2d, shape: tuple[int, int, int]) -> None:
    assume(_runs(conv, shape))
    norm, bound = jacobian_norm(conv, shape, points=1), _bound(conv, shape)
    assert bound >= norm * (1 - 1e-9)
    # Circular padding is exact where torch's outputs sample one whole coset of the stride on
    # the input's grid: a (strided) circular convolution there.
    out = conv(torch.zeros(1, *shape)).shape[-2:]
    cosets = all(
        n % s == 0 and o == n // s for n, s, o in zip(shape[1:], conv.stride, out, strict=True)
    )
    if conv.padding_mode == "circular" and cosets:
        assert bound <= norm * (1 + 1e-5)


@FAST
@given(convolutions())
def test_conv_bound_covers_its_jacobian(case):
    _check_convolution(*case)


@pytest.mark.slow
@MANY
@given(convolutions())
def test_conv_bound_covers_its_jacobian_many(case):
    _check_convolution(*case)


@st.composite
def pools(draw) -> tuple[nn.Module, tuple[int, int, int]]:
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    size = (2, draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    if draw(st.booleans()):
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        return nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode), size
    include = draw(st.booleans())
    divisor = draw(st.sampled_from([None, 1, 3]))
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode, include, divisor), size


def _check_pool(pool: nn.Module, shape: tuple[int, int, int]) -> None:
    assume(_runs(pool, shape))
    if isinstance(pool, nn.MaxPool2d) and pool(torch.zeros(1, *shape)).isinf().any():
        with pytest.raises(NotLipschitzError, match="entirely in its padding"):
            _bound(pool, shape)
        return
    norm, bound = jacobian_norm(pool, shape, points=2), _bound(pool, shape)
    assert bound >= norm * (1 - 1e-9)
    # Both are exact: a max pool's constant is attained where one pixel is the max of every
    # window it is in; an average pool is linear.
    exact = max_pool_constant(pool, shape) if isinstance(pool, nn.MaxPool2d) else norm
    assert bound == pytest.approx(exact, rel=1e-5)


@FAST
@given(pools())
def test_pool_bound_is_its_exact_constant(case):
    _check_pool(*case)


@pytest.mark.slow
@MANY
@given(pools())
def test_pool_bound_is_its_exact_constant_many(case):
    _check_pool(*case)


@st.composite
def elementwise(draw) -> tuple[nn.Module, tuple[int, ...]]:
    shape = (4, draw(st.integers(1, 4)), 4)
    return draw(
        st.sampled_from(
            [
                nn.LeakyReLU(draw(st.floats(-3, 3))),
                nn.Hardtanh(-draw(st.floats(0.1, 2)), draw(st.floats(0.1, 2))),
                nn.Sigmoid(),
                nn.Tanh(),
                nn.Softsign(),
                nn.ReLU6(),
                nn.PixelShuffle(2),
                nn.PixelUnshuffle(1),
                nn.ZeroPad2d((1, -1, 0, 2)),
                nn.Flatten(),
            ]
        )
    ), shape


@FAST
@given(elementwise())
def test_parameter_free_bounds_cover_their_jacobian(case):
    layer, shape = case
    assert _bound(layer, shape) >= jacobian_norm(layer, shape) * (1 - 1e-9)
