"""`tradeoff-train`: the Hydra task function that trains one configuration and logs it to MLflow.

    tradeoff-train loss=hkr loss.alpha=30 loss.min_margin=1
    tradeoff-train -m loss.tau=3,10,100           # a Hydra multirun: one MLflow child run each

It returns the final validation and test metrics, so sweepers can optimise any of them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import resolvers  # noqa: F401  (registers ${first_set:...} used in tradeoff/conf/)
from .allocator import tune_allocator
from .data.augment import Augment
from .export import export_vanilla
from .loop import TrainingDiverged, fit, resolve_device
from .schedules import Schedule
from .tracking import RunTracker, check_tracking_uri, parent_run_id, resolve_tracking_uri

log = logging.getLogger("tradeoff.train")

__all__ = ["ConfigError", "Job", "build", "main", "run"]


class ConfigError(ValueError):
    """An invalid configuration value, reported before any training."""


@dataclass
class Job:
    """Everything a run needs, built and validated from the config."""

    data: Any
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    eps: tuple[float, ...]
    schedule: Schedule | None = None
    augment: Augment | None = None


def _positive(value: Any) -> bool:
    """A finite number > 0 (not a bool)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def _check_train(cfg: DictConfig) -> None:
    t = cfg.train
    budget, clip = t.get("budget_minutes"), t.get("grad_clip")
    epochs_ok = isinstance(t.epochs, int) and t.epochs >= 1
    checks = [
        (
            "train.epochs",
            t.epochs,
            epochs_ok or (budget is not None and t.epochs is None),
            "an integer >= 1 (or null with train.budget_minutes)",
        ),
        (
            "train.budget_minutes",
            budget,
            budget is None or _positive(budget),
            "null or a finite number of minutes > 0",
        ),
        ("train.grad_clip", clip, clip is None or _positive(clip), "null or a finite number > 0"),
        (
            "train.batch_size",
            t.batch_size,
            isinstance(t.batch_size, int) and t.batch_size >= 1,
            "an integer >= 1",
        ),
        ("train.seed", t.seed, isinstance(t.seed, int), "an integer"),
        (
            "train.threads",
            t.threads,
            t.threads is None or (isinstance(t.threads, int) and t.threads >= 1),
            "null or an integer >= 1",
        ),
    ]
    for key, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r} is invalid: it must be {allowed}")
    resume = cfg.tracking.get("resume", "auto")
    if resume not in (True, False, "auto"):
        raise ConfigError(f"tracking.resume={resume!r} is invalid: it must be true, false or auto")
    for e in cfg.eval.eps:
        if not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise ConfigError(f"eval.eps contains {e!r}: radii must be finite numbers >= 0")


def _instantiate(group: str, node: DictConfig, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except hydra.errors.InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{group}: {cause}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{group}: {exc}") from None


def _threads(cfg: DictConfig) -> int:
    """Intra-op threads: train.threads, else the cores divided between parallel jobs."""
    if cfg.train.threads:
        return int(cfg.train.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else None
    return _job_threads(cores or 1, launcher or {})


def _job_threads(cores: int, launcher: Any) -> int:
    """One job's share of `cores` under the Hydra launcher config `launcher`.

    submitit (`cpus_per_task`) and Ray (`ray.remote.num_cpus`, 1 if unset, as Ray reserves)
    give each job its own CPUs; joblib runs `n_jobs` jobs at once on this machine's cores
    (-1 = as many jobs as cores, -2 = one fewer, as in joblib).
    """
    if launcher.get("cpus_per_task"):
        return int(launcher.get("cpus_per_task"))
    ray = launcher.get("ray")
    if ray is not None:
        return max(1, int((ray.get("remote") or {}).get("num_cpus") or 1))
    jobs = int(launcher.get("n_jobs") or 1)
    if jobs < 0:
        jobs = max(1, cores + 1 + jobs)
    return max(1, cores // jobs)


def build(cfg: DictConfig) -> Job:
    """Validate the config and build data, model, loss and optimiser from it."""
    _check_train(cfg)
    try:
        device = resolve_device(str(cfg.train.device))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    data = _instantiate("data", cfg.data)
    torch.manual_seed(int(cfg.train.seed))
    model = _instantiate(
        "model", cfg.model, input_shape=data.input_shape, num_classes=data.num_classes
    ).to(device)
    loss = _instantiate("loss", cfg.loss)
    make_optimizer = _instantiate("optim", cfg.optim)
    try:
        optimizer = make_optimizer(model.parameters())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optim: {exc}") from None
    schedule = _instantiate("schedule", cfg.schedule) if "schedule" in cfg else None
    augment = _instantiate("augment", cfg.augment) if "augment" in cfg else None
    if augment is not None:
        try:
            augment.check(data.input_shape)
        except ValueError as exc:
            raise ConfigError(f"augment: {exc} (data={cfg.data.name})") from None
    eps = tuple(float(e) for e in cfg.eval.eps)
    return Job(data, model, loss, optimizer, device, eps, schedule, augment)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration, log it to MLflow, return its final metrics."""
    threads = _threads(cfg)
    torch.set_num_threads(threads)
    allocator = tune_allocator()
    log.info("intra-op threads: %d, allocator: %s", threads, allocator)
    check_tracking_uri(resolve_tracking_uri(cfg.tracking.get("uri")))
    job = build(cfg)
    dev = job.device
    split = {
        name: (getattr(job.data, name).x.to(dev), getattr(job.data, name).y.to(dev))
        for name in ("train", "val", "test")
    }
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = HydraConfig.get().sweep.dir
    tracker = RunTracker(cfg, parent_run_id=parent_run_id(sweep_dir))
    resume = cfg.tracking.get("resume", "auto")
    if resume is True or (resume == "auto" and sweep_dir is not None):
        twin = tracker.finished_twin()
        if twin is not None:
            log.info("skipping: this config already has FINISHED run %s", twin.info.run_id)
            return dict(twin.data.metrics)
    tracker.start()
    log.info("MLflow run %s (%s)", tracker.run_id, tracker.uri)
    budget = cfg.train.get("budget_minutes")
    try:
        result = fit(
            job.model,
            job.loss,
            job.optimizer,
            split["train"],
            split["val"],
            split["test"],
            epochs=None if budget is not None else int(cfg.train.epochs),
            budget_seconds=None if budget is None else 60.0 * float(budget),
            batch_size=int(cfg.train.batch_size),
            seed=int(cfg.train.seed),
            eps=job.eps,
            on_epoch_end=lambda epoch, metrics: tracker.log_metrics(metrics, step=epoch),
            progress=cfg.train.progress,
            schedule=job.schedule,
            augment=job.augment,
            grad_clip=cfg.train.get("grad_clip"),
        )
        final = {f"test/{k}": v for k, v in result.test.metrics.items()}
        final.update(result.cost)
        tracker.log_metrics(final, step=len(result.history))
        tracker.set_tags({"stopped_by": "budget" if result.stopped_at_budget else "epochs"})
        tracker.log_certificates("test", result.test)
        if cfg.tracking.get("log_model", True):
            tracker.log_models(job.model, export_vanilla(job.model))
    except KeyboardInterrupt as exc:
        tracker.end("KILLED", exc)
        raise
    except Exception as exc:
        tracker.end("FAILED", exc)
        raise
    tracker.end("FINISHED")
    metrics = dict(result.history[-1])
    metrics.update(final)
    log.info(
        "test accuracy %.4f, mean certificate %.4f",
        final["test/accuracy"],
        final["test/mean_certificate"],
    )
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    """Console entry point (`tradeoff-train`)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except (ValueError, TrainingDiverged) as exc:
        # Config, data and tracking errors name their own fix: one line, no traceback.
        if multirun:
            raise
        print(f"tradeoff-train: error: {exc}", file=sys.stderr)
        sys.exit(1 if isinstance(exc, TrainingDiverged) else 2)


if __name__ == "__main__":
    main()
