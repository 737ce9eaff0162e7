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
from attacks import pgd_l2
from training import compose_config, train_config

from tradeoff import budget as budget_module
from tradeoff.certificates import certify
from tradeoff.cost import parameter_count
from tradeoff.schedules import Constant, Schedule
from tradeoff.train import ConfigError, Job, build

DIGITS = ["data=digits", "train.batch_size=64", "optim.lr=3e-3", "train.epochs=1"]


def _outcome(result) -> list[dict[str, float]]:
    timeless = [{k: v for k, v in h.items() if "seconds" not in k} for h in result.history]
    return [*timeless, result.test.metrics]


def test_the_default_recipe_is_the_seed_recipe_bit_for_bit(monkeypatch):
    job, default = train_config(DIGITS)
    assert isinstance(job.schedule, Constant) and job.augment is None
    _, before = train_config(DIGITS, recipe=False)
    assert _outcome(default) == _outcome(before)
    # A constant schedule run through a real per-batch scheduler changes nothing either.
    monkeypatch.setattr(Constant, "build", Schedule.build)
    _, scheduled = train_config(DIGITS)
    assert _outcome(scheduled) == _outcome(before)


def test_onecycle_steps_every_batch_over_all_epochs():
    seen: dict = {}
    cfg = [*DIGITS, "train.epochs=2", "optim=sgd", "optim.lr=0.05", "schedule=onecycle"]
    job, result = train_config(cfg, seen=seen)
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
        train_config(DIGITS, seen=seen, grad_clip=clip)
        norms[clip] = seen["grad_norm"]
    assert max(norms[None]) > 0.05
    assert max(norms[0.05]) <= 0.05 * (1 + 1e-5)


def test_augmentation_is_seeded_and_changes_training():
    shifted = [*DIGITS, "augment=shift", "augment.max_shift=1"]
    _, a = train_config(shifted)
    _, b = train_config(shifted)
    _, plain = train_config(DIGITS)
    assert _outcome(a) == _outcome(b)
    assert a.history[0]["train/loss"] != plain.history[0]["train/loss"]


def test_a_budget_stops_between_batches_and_lays_the_schedule_over_it(monkeypatch):
    """A fake clock that advances 10 ms per optimiser step: a 1 s budget buys 100 steps."""
    clock = types.SimpleNamespace(now=0.0)
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock.now)
    monkeypatch.setattr(budget_module, "time", fake_time)
    seen: dict = {"on_step": lambda: setattr(clock, "now", clock.now + 0.01)}
    # epochs=20: a cap the budget reaches first; it only guards against a stuck clock.
    job, result = train_config(
        [*DIGITS, "schedule=cosine"], seen=seen, epochs=20, budget_seconds=1.0
    )
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
    job, result = train_config(DIGITS)
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
        build(compose_config(["data=digits", *override.split()]))
    assert message in str(info.value)


@pytest.mark.slow  # bf16 autocast is slow on CPUs without bf16 units
def test_bf16_autocast_trains_and_its_certificates_hold():
    """train.amp=bf16 on the CPU: every training forward runs under bfloat16 autocast; the
    evaluation runs outside it (under autocast the certificates would raise PrecisionError),
    its certificates are those `certify` computes for the trained float32 model, and L2 PGD
    finds no adversarial example inside them."""
    autocast: list[bool] = []

    def record(job: Job) -> None:
        def forward(x: torch.Tensor) -> torch.Tensor:
            autocast.append(torch.is_autocast_enabled("cpu"))
            return job.model(x)

        job.train_forward = forward

    overrides = [*DIGITS, "train.epochs=2"]
    job, result = train_config([*overrides, "train.amp=bf16"], prepare=record)
    _, plain = train_config(overrides)
    assert job.amp is torch.bfloat16
    assert len(autocast) == result.steps and all(autocast)
    assert result.history[0]["train/loss"] != plain.history[0]["train/loss"]
    assert result.test.metrics["accuracy"] > 0.3  # above chance (0.1) after 2 epochs
    x = job.data.test.x
    assert torch.equal(result.test.radii, certify(job.model, x))
    sample = torch.nonzero(result.test.radii > 0).flatten()[:48]
    assert len(sample) >= 16
    flipped = pgd_l2(job.model.eval(), x[sample], 0.999 * result.test.radii[sample])
    assert not flipped.any()


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.amp=fp16", "train.amp='fp16' is invalid: it must be null or bf16"),
        ("train.compile=turbo", "train.compile='turbo' is invalid: it must be true, false or"),
        ("train.checkpoint_every=-1", "train.checkpoint_every=-1 is invalid: it must be an"),
    ],
)
def test_bad_device_options_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        build(compose_config(["data=digits", override]))
    assert str(info.value).startswith(message)


def test_compile_without_a_cpp_compiler_is_refused_before_training(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError) as info:
        build(compose_config(["data=digits", "train.compile=true"]))
    assert "needs a C++ compiler for inductor" in str(info.value)
    assert "train.compile=aot_eager" in str(info.value)


def test_a_budget_needs_no_epochs():
    cfg = compose_config(["data=digits", "train.budget_minutes=0.5", "train.epochs=null"])
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


@pytest.mark.slow  # compiling the training step takes one to several minutes on 2 cores
def test_compile_trains_the_compiled_step_and_certifies_the_model():
    """train.compile=true: inductor compiles the training forward (one batch shape: 1293
    images in 3 batches of 431); it trains as eager mode does, and the certificates come from
    the model itself."""
    overrides = ["data=digits", "model=seed_mlp", "train.batch_size=431", "train.epochs=1"]
    job, compiled = train_config([*overrides, "train.compile=true"])
    _, eager = train_config(overrides)
    assert job.train_forward is not None and job.train_forward is not job.model
    assert compiled.steps == eager.steps == 3
    assert compiled.history[0]["train/loss"] == pytest.approx(eager.history[0]["train/loss"])
    assert torch.equal(compiled.test.radii, certify(job.model, job.data.test.x))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_cuda_bf16_compiled_run_certifies_soundly():
    """train.device=cuda with bf16 autocast and a compiled step: the certificates, computed on
    the GPU in float32, hold against L2 PGD."""
    overrides = [*DIGITS, "train.epochs=3", "train.device=cuda", "train.amp=bf16"]
    job, result = train_config([*overrides, "train.compile=true"])
    assert job.device.type == "cuda" and result.test.metrics["accuracy"] > 0.3
    gpu_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < result.cost["train/peak_memory_mb"] < gpu_mib
    sample = torch.nonzero(result.test.radii > 0).flatten()[:48]
    model = job.model.eval().cpu()
    flipped = pgd_l2(model, job.data.test.x[sample], 0.999 * result.test.radii[sample])
    assert not flipped.any()


@CUDA
def test_cuda_checkpoint_resumes_on_the_gpu(tmp_path):
    """A CUDA run stopped mid-epoch and resumed from its checkpoint ends where the
    uninterrupted run ends (to float32 rounding: CUDA kernels need not be bit-reproducible)."""
    from tradeoff import checkpoint

    overrides = [*DIGITS, "train.epochs=2", "train.device=cuda", "augment=shift"]
    _, expected = train_config(overrides)
    path = tmp_path / "run.pt"
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 30

    _, stopped = train_config(
        overrides, checkpoint=lambda s: checkpoint.save(path, s), stop_requested=stop
    )
    assert stopped.interrupted
    _, resumed = train_config(overrides, resume=checkpoint.load(path))
    assert resumed.steps == expected.steps
    assert resumed.test.metrics["accuracy"] == pytest.approx(
        expected.test.metrics["accuracy"], abs=0.02
    )
