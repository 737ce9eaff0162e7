"""The training recipe on real digits: schedules, augmentation, gradient clipping, a wall-clock
budget and the cost a run reports; the seed's recipe stays bit for bit what it was; bad values
are refused before training, naming the key."""

from __future__ import annotations

import math
import os
import subprocess
import types
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tradeoff import budget as budget_module
from tradeoff.cost import parameter_count
from tradeoff.loop import fit
from tradeoff.paths import conf_dir
from tradeoff.schedules import Constant, Schedule
from tradeoff.train import ConfigError, build

DIGITS = ["data=digits", "train.batch_size=64", "optim.lr=3e-3", "train.epochs=1"]


def _compose(overrides: list[str]):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def _watch(optimizer: torch.optim.Optimizer, model: torch.nn.Module, seen: dict) -> None:
    """Record the learning rate and gradient norm each optimiser step uses."""

    def before_step(opt, args, kwargs) -> None:
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        seen.setdefault("lr", []).append(opt.param_groups[0]["lr"])
        seen.setdefault("grad_norm", []).append(float(torch.stack(grads).norm()))
        if "on_step" in seen:
            seen["on_step"]()

    optimizer.register_step_pre_hook(before_step)


def _fit(overrides: list[str], *, recipe: bool = True, seen: dict | None = None, **extra):
    """Build the config's job and train it; `recipe=False` passes none of the recipe's options
    (the code path of a run before schedules, augmentation and clipping existed); `seen`
    collects what each optimiser step used (`_watch`); `extra` overrides fit's arguments."""
    cfg = _compose(overrides)
    job = build(cfg)
    if seen is not None:
        _watch(job.optimizer, job.model, seen)
    d = job.data
    options = {"epochs": cfg.train.epochs, "seed": cfg.train.seed}
    if recipe:
        options.update(schedule=job.schedule, augment=job.augment, grad_clip=cfg.train.grad_clip)
    result = fit(
        job.model,
        job.loss,
        job.optimizer,
        (d.train.x, d.train.y),
        (d.val.x, d.val.y),
        (d.test.x, d.test.y),
        batch_size=cfg.train.batch_size,
        eps=job.eps,
        progress=False,
        **{**options, **extra},
    )
    return job, result


def _outcome(result) -> list[dict[str, float]]:
    timeless = [{k: v for k, v in h.items() if "seconds" not in k} for h in result.history]
    return [*timeless, result.test.metrics]


def test_the_default_recipe_is_the_seed_recipe_bit_for_bit(monkeypatch):
    job, default = _fit(DIGITS)
    assert isinstance(job.schedule, Constant) and job.augment is None
    _, before = _fit(DIGITS, recipe=False)
    assert _outcome(default) == _outcome(before)
    # A constant schedule run through a real per-batch scheduler changes nothing either.
    monkeypatch.setattr(Constant, "build", Schedule.build)
    _, scheduled = _fit(DIGITS)
    assert _outcome(scheduled) == _outcome(before)


def test_onecycle_steps_every_batch_over_all_epochs():
    seen: dict = {}
    cfg = [*DIGITS, "train.epochs=2", "optim=sgd", "optim.lr=0.05", "schedule=onecycle"]
    job, result = _fit(cfg, seen=seen)
    steps = 2 * math.ceil(len(job.data.train) / 64)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, 0.05, total_steps=steps)
    expected = []
    for _ in range(steps):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step() if len(expected) < steps else None
    assert seen["lr"] == pytest.approx(expected, rel=1e-12)
    assert result.steps == steps and result.epochs_done == 2.0
    assert result.history[-1]["train/lr"] == pytest.approx(0.05 / 25 / 1e4)


def test_gradient_clipping_caps_the_global_norm():
    norms = {}
    for clip in (None, 0.05):
        seen: dict = {}
        _fit(DIGITS, seen=seen, grad_clip=clip)
        norms[clip] = seen["grad_norm"]
    assert max(norms[None]) > 0.05
    assert max(norms[0.05]) <= 0.05 * (1 + 1e-5)


def test_augmentation_is_seeded_and_changes_training():
    shifted = [*DIGITS, "augment=shift", "augment.max_shift=1"]
    _, a = _fit(shifted)
    _, b = _fit(shifted)
    _, plain = _fit(DIGITS)
    assert _outcome(a) == _outcome(b)
    assert a.history[0]["train/loss"] != plain.history[0]["train/loss"]


def test_a_budget_stops_between_batches_and_lays_the_schedule_over_it(monkeypatch):
    """A fake clock that advances 10 ms per optimiser step: a 1 s budget buys 100 steps."""
    clock = types.SimpleNamespace(now=0.0)
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock.now)
    monkeypatch.setattr(budget_module, "time", fake_time)
    seen: dict = {"on_step": lambda: setattr(clock, "now", clock.now + 0.01)}
    # epochs=20: a cap the budget reaches first; it only guards against a stuck clock.
    job, result = _fit([*DIGITS, "schedule=cosine"], seen=seen, epochs=20, budget_seconds=1.0)
    per_epoch = math.ceil(len(job.data.train) / 64)
    assert result.stopped_at_budget and result.test is not None
    assert 99 <= result.steps <= 101
    assert result.epochs_done == pytest.approx(result.steps / per_epoch)
    assert len(result.history) == math.ceil(result.epochs_done)
    assert "val/accuracy" in result.history[-1]  # the cut epoch is evaluated too
    # From the second step on (the first has no pace to go by) the warm-up is 5% of 100 steps.
    warmup = round(0.05 * 100)
    expected = [3e-3 * (i + 1) / warmup for i in range(warmup)]
    assert seen["lr"][1:warmup] == pytest.approx(expected[1:])
    assert seen["lr"][-1] < 3e-3 * 1e-3  # the cosine reached its end with the budget
    assert result.cost["train/steps"] == result.steps


def test_a_run_reports_its_cost():
    job, result = _fit(DIGITS)
    cost = result.cost
    assert set(cost) == {
        "train/seconds",
        "train/images_per_second",
        "train/peak_memory_mb",
        "train/steps",
        "train/epochs_done",
        "model/params",
    }
    n = len(job.data.train)
    assert cost["train/steps"] == math.ceil(n / 64) and cost["train/epochs_done"] == 1.0
    assert cost["model/params"] == parameter_count(job.model) > 0
    assert cost["train/seconds"] >= result.history[0]["train/epoch_seconds"] > 0
    assert cost["train/images_per_second"] == pytest.approx(
        n / result.history[0]["train/epoch_seconds"]
    )
    assert 10 < cost["train/peak_memory_mb"] < 1e6  # RSS in MiB, not KiB or bytes


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.budget_minutes=-1", "train.budget_minutes=-1 is invalid"),
        ("train.budget_minutes=0", "train.budget_minutes=0 is invalid"),
        ("train.budget_minutes=inf", "train.budget_minutes=inf is invalid"),
        ("train.epochs=null", "train.epochs=None is invalid"),
        ("train.grad_clip=0", "train.grad_clip=0 is invalid"),
        ("schedule.name=warm", "schedule: unknown schedule 'warm'"),
        ("schedule=onecycle schedule.pct_start=2", "schedule: pct_start must be in (0, 1)"),
        ("augment=crop_flip", "augment: crop_flip is for colour photos"),
        ("augment=shift augment.max_shift=3", "augment: shift: max_shift=3"),
        ("optim=adamw optim.weight_decay=-1", "optim.weight_decay=-1 is invalid: it must be a"),
    ],
)
def test_bad_recipe_values_are_refused_before_training(override, message):
    with pytest.raises(ConfigError) as info:
        build(_compose(["data=digits", *override.split()]))
    assert message in str(info.value)


def test_a_budget_needs_no_epochs():
    cfg = _compose(["data=digits", "train.budget_minutes=0.5", "train.epochs=null"])
    assert build(cfg).schedule is not None


# -- through the real CLI ----------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_comparison_recipe_runs_through_the_cli(tmp_path):
    """convnet, SGD with Nesterov momentum and weight decay, OneCycle, shifts and clipping, for
    a 6-second budget on digits: every cost metric and how far it got are logged."""
    proc = _cli(
        [
            "tradeoff-train",
            "data=digits",
            "model=convnet",
            "model.width=8",
            "model.depth=1",
            "optim=sgd",
            "optim.lr=0.05",
            "optim.weight_decay=5e-4",
            "schedule=onecycle",
            "augment=shift",
            "augment.max_shift=1",
            "train.grad_clip=1.0",
            "train.budget_minutes=0.1",
            "train.batch_size=64",
            "train.threads=1",
            "tracking.log_model=false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(search_all_experiments=True).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.stopped_by"] == "budget"
    assert run["params.schedule.name"] == "onecycle" and run["params.model.name"] == "convnet"
    assert 6.0 <= run["metrics.train/seconds"] < 30
    assert run["metrics.train/steps"] > 0 and run["metrics.train/epochs_done"] > 0
    for metric in ("train/images_per_second", "train/peak_memory_mb", "model/params"):
        assert run[f"metrics.{metric}"] > 0, metric
    assert run["metrics.test/accuracy"] > 0.1


@pytest.mark.slow
def test_the_cli_refuses_a_negative_budget_naming_the_key(tmp_path):
    proc = _cli(["tradeoff-train", "data=digits", "train.budget_minutes=-5"], tmp_path)
    assert proc.returncode == 2
    assert "train.budget_minutes=-5 is invalid" in proc.stderr
    assert "epoch" not in proc.stdout
