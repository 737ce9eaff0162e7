"""Learning-rate schedules: the shapes, torch's OneCycleLR reproduced, a length that can move."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tradeoff.schedules import SCHEDULES, ScheduledLR, create


def _optimizer(lr: float = 0.5) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _rates(scheduler: ScheduledLR | None, optimizer: torch.optim.Optimizer, steps: int) -> list:
    """The learning rate each of `steps` batches uses."""
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


@pytest.mark.parametrize("total", [7, 40, 101])
@pytest.mark.parametrize("pct_start", [0.05, 0.3, 0.5])
def test_onecycle_gives_torchs_onecycle_rates(total, pct_start):
    opt = _optimizer()
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.5, total_steps=total, pct_start=pct_start, cycle_momentum=False
    )
    expected = []
    for step in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        if step < total - 1:  # OneCycleLR refuses a step past its last
            ref.step()
    mine = _optimizer()
    got = _rates(create("onecycle", pct_start=pct_start).build(mine, total), mine, total)
    assert got == pytest.approx(expected, rel=1e-12)


def test_cosine_warms_up_linearly_then_decays_to_its_floor():
    opt = _optimizer(1.0)
    rates = _rates(create("cosine", warmup=0.1, min_factor=0.01).build(opt, 100), opt, 100)
    assert rates[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert rates[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * 89 / 90)) / 2)


def test_step_drops_at_its_milestones():
    opt = _optimizer(1.0)
    rates = _rates(create("step", milestones=[0.5, 0.8], gamma=0.5).build(opt, 10), opt, 10)
    assert rates == pytest.approx([1.0] * 5 + [0.5] * 3 + [0.25] * 2)


def test_constant_builds_no_scheduler():
    assert create().build(_optimizer(), 10) is None
    assert create("constant").factor(3, 10) == 1.0


def test_a_new_length_reshapes_the_rest_of_the_run():
    """A budget learns the run's length while it runs: the schedule follows the new total."""
    opt = _optimizer(1.0)
    scheduler = create("cosine", warmup=0.0).build(opt, 10)
    _rates(scheduler, opt, 5)
    scheduler.total_steps = 100
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx((1 + math.cos(math.pi * 6 / 100)) / 2)


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("warm", {}, "unknown schedule 'warm'; schedules: " + ", ".join(SCHEDULES)),
        ("onecycle", {"pct_start": 1.5}, "pct_start must be in (0, 1)"),
        ("onecycle", {"div_factor": 0.5}, "div_factor must be a number >= 1"),
        ("cosine", {"warmup": -0.1}, "warmup must be in [0, 1)"),
        ("step", {"milestones": [0.8, 0.5]}, "milestones must increase"),
        ("step", {"gamma": 2.0}, "gamma must be in (0, 1]"),
        ("cosine", {"warmpu": 0.1}, "unknown option(s) warmpu for schedule 'cosine'"),
    ],
)
def test_bad_schedules_are_refused_naming_the_key(name, options, message):
    with pytest.raises(ValueError) as info:
        create(name, **options)
    assert message in str(info.value)
