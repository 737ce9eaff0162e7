"""Tests for tradeoff.losses: values worked out by hand, validation, gradients and the registry."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from tradeoff import losses
from tradeoff.losses import (
    LOSSES,
    MulticlassHinge,
    MulticlassHKR,
    MulticlassKR,
    NegKR,
    OffsetCrossEntropy,
    TauCrossEntropy,
    create,
)

# Three samples, three classes, simple numbers. Rows are samples.
#   sample 0: f = [2,  0,    -1]
#   sample 1: f = [0,  0.25,  0]
#   sample 2: f = [1, -1,     3]
F3 = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.25, 0.0], [1.0, -1.0, 3.0]], dtype=torch.float64)
Y_ALL = torch.tensor([0, 1, 2])  # every class present
Y_ABSENT = torch.tensor([0, 0, 1])  # class 2 absent from the batch

TOL = {"rel": 1e-6, "abs": 1e-6}  # KR's eps = 1e-7 shifts values by ~1e-7

# Hand values ---------------------------------------------------------------------------------

# Hinge, min_margin = 1 (each side must clear 0.5), C = 3 so the true-class term is x2:
#   s0 (y=0): true relu(0.5-2)=0 -> 0*2; c1 relu(0.5+0)=0.5; c2 relu(0.5-1)=0    -> 0.5/3
#   s1 (y=1): true relu(0.5-0.25)=0.25 -> 0.5; c0 relu(0.5+0)=0.5; c2 0.5        -> 1.5/3
#   s2 (y=2): true relu(0.5-3)=0; c0 relu(0.5+1)=1.5; c1 relu(0.5-1)=0           -> 1.5/3
HINGE_ALL = ((0.5 / 3) + (1.5 / 3) + (1.5 / 3)) / 3  # = 7/18

# KR, labels [0, 1, 2]:
#   class 0: pos f[0,0]=2;     neg mean(f[1,0], f[2,0]) = (0 + 1)/2  = 0.5   -> 1.5
#   class 1: pos f[1,1]=0.25;  neg mean(f[0,1], f[2,1]) = (0 - 1)/2  = -0.5  -> 0.75
#   class 2: pos f[2,2]=3;     neg mean(f[0,2], f[1,2]) = (-1 + 0)/2 = -0.5  -> 3.5
KR_ALL = (1.5 + 0.75 + 3.5) / 3

# KR, labels [0, 0, 1] (class 2 absent):
#   class 0: pos mean(f[0,0], f[1,0]) = (2 + 0)/2 = 1;  neg f[2,0] = 1                  -> 0
#   class 1: pos f[2,1] = -1;  neg mean(f[0,1], f[1,1]) = (0 + 0.25)/2 = 0.125          -> -1.125
#   class 2: pos 0/(0 + eps) = 0;  neg mean over all three = (-1 + 0 + 3)/3 = 2/3      -> -2/3
KR_ABSENT = (0.0 - 1.125 - 2.0 / 3.0) / 3


# Value tests ---------------------------------------------------------------------------------


def test_tau_cross_entropy_by_hand() -> None:
    tau = 2.0
    # per sample: (-tau*f_y + log sum_j exp(tau*f_j)) / tau
    s0 = (-(2 * 2.0) + math.log(math.exp(4.0) + math.exp(0.0) + math.exp(-2.0))) / 2
    s1 = (-(2 * 0.25) + math.log(math.exp(0.0) + math.exp(0.5) + math.exp(0.0))) / 2
    s2 = (-(2 * 3.0) + math.log(math.exp(2.0) + math.exp(-2.0) + math.exp(6.0))) / 2
    expected = (s0 + s1 + s2) / 3
    assert TauCrossEntropy(tau=tau)(F3, Y_ALL).item() == pytest.approx(expected, rel=1e-12)
    assert losses.tau_cross_entropy(F3, Y_ALL, tau).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0, 50.0])
def test_tau_cross_entropy_matches_manual_log_softmax(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    log_p = torch.log_softmax(tau * f, dim=1)
    manual = -log_p[torch.arange(7), y].mean() / tau
    got = TauCrossEntropy(tau=tau)(f, y)
    torch.testing.assert_close(got, manual, rtol=1e-12, atol=1e-12)


def test_tau_one_is_plain_cross_entropy() -> None:
    torch.testing.assert_close(TauCrossEntropy(tau=1.0)(F3, Y_ALL), F.cross_entropy(F3, Y_ALL))


def test_multiclass_kr_by_hand() -> None:
    assert MulticlassKR()(F3, Y_ALL).item() == pytest.approx(KR_ALL, **TOL)
    assert losses.multiclass_kr(F3, Y_ALL).item() == pytest.approx(KR_ALL, **TOL)
    assert NegKR()(F3, Y_ALL).item() == pytest.approx(-KR_ALL, **TOL)


def test_multiclass_kr_absent_class() -> None:
    assert MulticlassKR()(F3, Y_ABSENT).item() == pytest.approx(KR_ABSENT, **TOL)


def test_multiclass_kr_batch_size_behaviour() -> None:
    """KR uses per-class means, so repeating the batch (more samples, same proportions) leaves
    it unchanged, also when a class is absent; the absent class still counts in the mean over C."""
    kr = MulticlassKR()
    for y in (Y_ALL, Y_ABSENT):
        base = kr(F3, y)
        doubled = kr(torch.cat([F3, F3]), torch.cat([y, y]))
        torch.testing.assert_close(doubled, base, rtol=1e-6, atol=1e-6)
    # a batch of one sample (class 0): class 0 pos = 2, neg 0/eps = 0; classes 1 and 2 absent:
    #   pos 0, neg = f_c of the only sample -> 0 - 0 and 0 - (-1)
    one = kr(F3[:1], torch.tensor([0]))
    assert one.item() == pytest.approx((2.0 + (0.0 - 0.0) + (0.0 + 1.0)) / 3, **TOL)


def test_multiclass_kr_half_precision_absent_class_is_finite() -> None:
    value = MulticlassKR()(F3.to(torch.bfloat16), Y_ABSENT)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(KR_ABSENT, rel=1e-2)


def test_multiclass_hinge_by_hand() -> None:
    assert MulticlassHinge()(F3, Y_ALL).item() == pytest.approx(7 / 18, rel=1e-12)
    assert pytest.approx(7 / 18) == HINGE_ALL
    assert losses.multiclass_hinge(F3, Y_ALL).item() == pytest.approx(HINGE_ALL, rel=1e-12)


def test_multiclass_hinge_other_margin_by_hand() -> None:
    # min_margin = 4 -> each side must clear 2; C - 1 = 2 on the true term
    #   s0 (y=0): true relu(2-2)=0; c1 relu(2+0)=2; c2 relu(2-1)=1            -> 3/3
    #   s1 (y=1): true relu(2-0.25)=1.75 -> 3.5; c0 2; c2 2                    -> 7.5/3
    #   s2 (y=2): true relu(2-3)=0; c0 relu(2+1)=3; c1 relu(2-1)=1             -> 4/3
    expected = (3 / 3 + 7.5 / 3 + 4 / 3) / 3
    assert MulticlassHinge(min_margin=4.0)(F3, Y_ALL).item() == pytest.approx(expected, rel=1e-12)


def test_multiclass_hkr_by_hand() -> None:
    for alpha in (10.0, 50.0, 30.0):
        expected = -KR_ALL + alpha * HINGE_ALL
        got = MulticlassHKR(alpha=alpha)(F3, Y_ALL).item()
        assert got == pytest.approx(expected, **TOL)
    assert losses.multiclass_hkr(F3, Y_ALL, alpha=50.0).item() == pytest.approx(
        -KR_ALL + 50.0 * HINGE_ALL, **TOL
    )


def test_multiclass_hkr_alpha_inf_is_hinge_only() -> None:
    got = MulticlassHKR(alpha=math.inf)(F3, Y_ALL)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(HINGE_ALL, rel=1e-12)


def test_multiclass_hkr_alpha_zero_is_neg_kr_only() -> None:
    assert MulticlassHKR(alpha=0.0)(F3, Y_ALL).item() == pytest.approx(-KR_ALL, **TOL)
    assert MulticlassHKR(alpha=0)(F3, Y_ABSENT).item() == pytest.approx(-KR_ABSENT, **TOL)


def test_offset_cross_entropy_by_hand() -> None:
    offset, t = 1.0, 0.5
    # shifted logits (f - offset*onehot) / t, then CE, times t
    #   s0 (y=0): [1, 0, -1]/0.5 = [2, 0, -2]
    #   s1 (y=1): [0, -0.75, 0]/0.5 = [0, -1.5, 0]
    #   s2 (y=2): [1, -1, 2]/0.5 = [2, -2, 4]
    s0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-2.0))
    s1 = 1.5 + math.log(math.exp(0.0) + math.exp(-1.5) + math.exp(0.0))
    s2 = -4.0 + math.log(math.exp(2.0) + math.exp(-2.0) + math.exp(4.0))
    expected = t * (s0 + s1 + s2) / 3
    got = OffsetCrossEntropy(offset=offset, temperature=t)(F3, Y_ALL).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert losses.offset_cross_entropy(F3, Y_ALL, offset, t).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_offset_cross_entropy_defaults() -> None:
    loss = OffsetCrossEntropy()
    assert loss.offset == pytest.approx(math.sqrt(2))
    assert loss.temperature == 0.25
    # offset 0, temperature 1 is plain cross-entropy
    plain = OffsetCrossEntropy(offset=0.0, temperature=1.0)(F3, Y_ALL)
    torch.testing.assert_close(plain, F.cross_entropy(F3, Y_ALL))


# Validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "name", "bad"),
    [
        (lambda v: TauCrossEntropy(tau=v), "tau", -1.0),
        (lambda v: TauCrossEntropy(tau=v), "tau", 0.0),
        (lambda v: TauCrossEntropy(tau=v), "tau", math.inf),
        (lambda v: TauCrossEntropy(tau=v), "tau", math.nan),
        (lambda v: MulticlassHinge(min_margin=v), "min_margin", -0.5),
        (lambda v: MulticlassHinge(min_margin=v), "min_margin", math.inf),
        (lambda v: MulticlassHKR(alpha=v), "alpha", -1.0),
        (lambda v: MulticlassHKR(alpha=v), "alpha", math.nan),
        (lambda v: MulticlassHKR(alpha=v), "alpha", -math.inf),
        (lambda v: MulticlassHKR(min_margin=v), "min_margin", -1.0),
        (lambda v: OffsetCrossEntropy(temperature=v), "temperature", 0.0),
        (lambda v: OffsetCrossEntropy(temperature=v), "temperature", -0.25),
        (lambda v: OffsetCrossEntropy(temperature=v), "temperature", math.inf),
        (lambda v: OffsetCrossEntropy(offset=v), "offset", -1.0),
        (lambda v: OffsetCrossEntropy(offset=v), "offset", math.nan),
    ],
)
def test_bad_hyperparameters_raise(factory, name: str, bad: float) -> None:
    with pytest.raises(ValueError) as info:
        factory(bad)
    message = str(info.value)
    assert message.startswith(f"{name} must be")
    assert repr(bad) in message  # the bad value
    assert "inf" in message  # the allowed range, e.g. "(0, inf)"


def test_tau_message_explains() -> None:
    with pytest.raises(ValueError, match=r"tau must be > 0 .*\(got -1\.0\); tau is the softmax"):
        TauCrossEntropy(tau=-1.0)


def test_allowed_edge_values() -> None:
    assert MulticlassHKR(alpha=math.inf).alpha == math.inf
    assert MulticlassHKR(alpha=0).alpha == 0.0
    assert MulticlassHinge(min_margin=0).min_margin == 0.0
    assert OffsetCrossEntropy(offset=0).offset == 0.0


@pytest.mark.parametrize("bad", ["3", True, None])
def test_non_numbers_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="tau"):
        TauCrossEntropy(tau=bad)  # type: ignore[arg-type]


ALL_LOSSES = [
    TauCrossEntropy(tau=3.0),
    MulticlassKR(),
    NegKR(),
    MulticlassHinge(),
    MulticlassHKR(alpha=50.0),
    MulticlassHKR(alpha=math.inf),
    OffsetCrossEntropy(),
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: type(m).__name__)
def test_target_checks(loss) -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        loss(F3, torch.tensor([0, 1]))  # too few labels
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        loss(F3, F.one_hot(Y_ALL, 3))  # one-hot is not accepted
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        loss(F3, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        loss(F3, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match="integer class ids"):
        loss(F3, Y_ALL.double())
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        loss(F3[0], Y_ALL)
    # other integer dtypes are accepted and cast
    torch.testing.assert_close(loss(F3, Y_ALL.int()), loss(F3, Y_ALL))


# Gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("labels", [Y_ALL, Y_ABSENT], ids=["all", "absent"])
def test_gradients_finite(loss, labels: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(1)
    f = (10 * torch.randn(3, 3, generator=g)).requires_grad_()
    value = loss(f, labels)
    assert value.ndim == 0
    value.backward()
    assert torch.isfinite(value)
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_kr_gradient_by_hand() -> None:
    """d KR / d f[n, c] = (1/C) * (1/|c| if y_n = c else -1/(N - |c|)); absent class: -1/(C N)."""
    f = F3.clone().requires_grad_()
    MulticlassKR()(f, Y_ABSENT).backward()
    # labels [0, 0, 1]: class 0 has 2 samples, class 1 has 1, class 2 none; C = 3, N = 3
    expected = (
        torch.tensor(
            [
                [1 / 2, -1 / 2, -1 / 3],
                [1 / 2, -1 / 2, -1 / 3],
                [-1 / 1, 1 / 1, -1 / 3],
            ],
            dtype=torch.float64,
        )
        / 3
    )
    torch.testing.assert_close(f.grad, expected, rtol=1e-6, atol=1e-6)


# Registry, hparams, repr ---------------------------------------------------------------------


def test_registry_families() -> None:
    assert set(LOSSES) == {"tau_cce", "hkr", "kr", "hinge", "offset_ce"}
    for family, cls in LOSSES.items():
        assert cls.family == family
    assert LOSSES["kr"] is NegKR
    assert MulticlassKR.family == "kr"


def test_create() -> None:
    loss = create("tau_cce", tau=3.0)
    assert isinstance(loss, TauCrossEntropy) and loss.hparams() == {"tau": 3.0}
    hkr = create("hkr", alpha=50, min_margin=1.0)
    assert isinstance(hkr, MulticlassHKR)
    assert hkr.hparams() == {"alpha": 50.0, "min_margin": 1.0}
    assert create("hinge").hparams() == {"min_margin": 1.0}
    assert create("offset_ce", offset=1.0, temperature=0.5).hparams() == {
        "offset": 1.0,
        "temperature": 0.5,
    }
    kr = create("kr")
    assert isinstance(kr, NegKR) and kr.hparams() == {}
    assert kr(F3, Y_ALL).item() == pytest.approx(-KR_ALL, **TOL)  # a loss: -KR


def test_create_unknown_family_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown loss family 'mse'") as info:
        create("mse")
    for family in LOSSES:
        assert family in str(info.value)


def test_create_bad_params() -> None:
    with pytest.raises(ValueError, match=r"tau_cce.*accepted: tau"):
        create("tau_cce", tau=1.0, alpha=2.0)
    with pytest.raises(ValueError, match=r"requires parameter.*tau"):
        create("tau_cce")
    with pytest.raises(ValueError, match="alpha"):
        create("hkr", alpha=-1.0)


def test_extra_repr_shows_hparams() -> None:
    assert repr(TauCrossEntropy(tau=3.0)) == "TauCrossEntropy(tau=3.0)"
    assert (
        repr(MulticlassHKR(alpha=50, min_margin=1)) == "MulticlassHKR(alpha=50.0, min_margin=1.0)"
    )
    assert "offset=" in repr(OffsetCrossEntropy()) and "temperature=0.25" in repr(
        OffsetCrossEntropy()
    )
    assert repr(MulticlassKR()) == "MulticlassKR()"


# One description per family -------------------------------------------------------------------

CONF_LOSS = Path(losses.__file__).parent / "conf" / "loss"


def test_each_family_has_one_config_with_its_hyperparameters() -> None:
    assert list(losses.FAMILIES) == list(LOSSES)
    assert {p.stem for p in CONF_LOSS.glob("*.yaml")} == set(losses.FAMILIES)
    for name, described in losses.FAMILIES.items():
        conf = OmegaConf.to_container(OmegaConf.load(CONF_LOSS / f"{name}.yaml"))
        assert conf.pop("family") == name and conf.pop("_target_") == "tradeoff.losses.create"
        assert sorted(conf) == sorted(h.key for h in described.hyperparameters), name
        assert create(name, **conf).hparams().keys() == set(conf)
        assert described.loss is LOSSES[name] and described.colour.startswith("#")


def test_a_description_that_misses_an_argument_is_refused() -> None:
    tau = losses.Hyperparameter("tau", "tau", "τ", "τ")
    with pytest.raises(ValueError, match=r"'hkr' describes hyperparameters \['tau'\].*alpha"):
        losses.LossFamily("hkr", MulticlassHKR, "#000000", (tau,))


def test_run_names_and_report_labels_use_the_same_short_names() -> None:
    from tradeoff.report.frame import hyperparameters
    from tradeoff.tracking import run_name

    assert run_name({"family": "tau_cce", "tau": 3.0}) == "tau_cce tau=3"
    assert run_name({"family": "hkr", "alpha": 30.0, "min_margin": 1.0}) == "hkr m=1 a=30"
    assert run_name({"family": "offset_ce", "offset": 1.0, "temperature": 0.25}) == (
        "offset_ce o=1 T=0.25"
    )
    assert run_name({"family": "kr"}) == "kr"
    for name in losses.FAMILIES:
        conf = OmegaConf.to_container(OmegaConf.load(CONF_LOSS / f"{name}.yaml"))
        row = pd.Series(
            {"loss_family": name, **{f"params.loss.{k}": 2.0 for k in conf if k != "_target_"}}
        )
        named = run_name({**conf, **{k: 2.0 for k in conf if k not in ("family", "_target_")}})
        assert named == " ".join([name, hyperparameters(row)]).strip()
