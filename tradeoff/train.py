"""`tradeoff-train`: the Hydra task function that trains one configuration and logs it to MLflow.

    tradeoff-train loss=hkr loss.alpha=30 loss.min_margin=1
    tradeoff-train -m loss.tau=3,10,100           # a Hydra multirun: one MLflow child run each

It returns the final validation and test metrics, so sweepers can optimise any of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig

from . import (
    checkpoint,
    resolvers,  # noqa: F401  (registers ${first_set:...} used in tradeoff/conf/)
    signals,
    watchdog,
    zoo,
)
from .allocator import tune_allocator
from .certificates import summarize
from .data.augment import Augment
from .degenerate import TAG as DEGENERATE
from .degenerate import diameter, why_degenerate
from .export import export_vanilla
from .loop import TrainingDiverged, fit, resolve_device
from .paths import OutputDirError, writable_dir
from .schedules import Schedule
from .stores import store_failure
from .tracking import (
    RunTracker,
    check_tracking_uri,
    experiment_name,
    parent_run_id,
    resolve_tracking_uri,
)

log = logging.getLogger("tradeoff.train")

__all__ = ["ConfigError", "Job", "build", "logged_metrics", "main", "run"]


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
    amp: torch.dtype | None = None
    train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None


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
        (
            "train.checkpoint_every",
            t.get("checkpoint_every", 0),
            _count(t.get("checkpoint_every", 0)),
            "an integer >= 0 (epochs between checkpoints; 0: only when a signal stops the run)",
        ),
        (
            "train.amp",
            t.get("amp"),
            t.get("amp") in tuple(AMP),
            "null or bf16 (float16 would need loss scaling, which tradeoff does not do)",
        ),
    ]
    for key, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r} is invalid: it must be {allowed}")
    _check_numbers(cfg)
    resume = cfg.tracking.get("resume", "auto")
    if resume not in (True, False, "auto"):
        raise ConfigError(f"tracking.resume={resume!r} is invalid: it must be true, false or auto")
    for e in cfg.eval.eps:
        if not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise ConfigError(f"eval.eps contains {e!r}: radii must be finite numbers >= 0")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    """An integer >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


AMP = {None: None, "bf16": torch.bfloat16}  # train.amp: the training forward's autocast dtype


def _amp(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` on `device`: bf16 on the CPU (any torch) and on GPUs
    that have it."""
    amp = AMP[cfg.train.get("amp")]
    if amp is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.amp=bf16 is invalid: {torch.cuda.get_device_name(device)} has no bfloat16; "
            "set train.amp=null"
        )
    return amp


def _compiler(cfg: DictConfig, device: torch.device) -> str | None:
    """The torch.compile backend `train.compile` asks for (true: inductor), or None; refused
    before training where it cannot work."""
    value = cfg.train.get("compile", False)
    if value is False or value is None:
        return None
    backend = "inductor" if value is True else value
    backends = torch._dynamo.list_backends(exclude_tags=())
    if not isinstance(backend, str) or backend not in backends:
        raise ConfigError(
            f"train.compile={value!r} is invalid: it must be true, false or a torch.compile "
            f"backend ({', '.join(backends)})"
        )
    compilers = ("g++", "c++", "clang++")
    cxx = os.environ.get("CXX")
    if backend == "inductor" and device.type == "cpu" and not _which(cxx, *compilers):
        raise ConfigError(
            f"train.compile={value!r} on the CPU needs a C++ compiler for inductor (none of "
            f"{', '.join(compilers)} found); install one, or set train.compile=aot_eager "
            "(no code generation) or false"
        )
    return backend


def _which(*names: str | None) -> str | None:
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


def _check_numbers(cfg: DictConfig) -> None:
    """The optimiser's and the schedule's settings are numbers (a learning rate of `fast`
    would reach torch as a string), the learning rate finite and > 0, decay and momentum
    finite and >= 0, the evaluation batch an integer >= 1."""
    for group in ("optim", "schedule"):
        for key, value in (cfg.get(group) or {}).items():
            if key in ("_target_", "_partial_", "name") or isinstance(value, bool):
                continue
            values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
            if not all(_number(v) for v in values):
                raise ConfigError(f"{group}.{key}={value!r} is invalid: it must be a number")
    _check_model_numbers(cfg.get("model") or {})
    optim = cfg.get("optim") or {}
    ranges = [
        ("lr", _positive, "a finite number > 0"),
        ("weight_decay", _non_negative, "a finite number >= 0"),
        ("momentum", _non_negative, "a finite number >= 0"),
    ]
    for key, ok, allowed in ranges:
        if key in optim and not ok(optim[key]):
            raise ConfigError(f"optim.{key}={optim[key]!r} is invalid: it must be {allowed}")
    size = (cfg.get("eval") or {}).get("batch_size", 1)
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        raise ConfigError(f"eval.batch_size={size!r} is invalid: it must be an integer >= 1")


def _check_model_numbers(model: Any) -> None:
    """A model option whose default is a number (or numbers) must be one: `model.width=wide`
    is refused by name, not by the builder's arithmetic."""
    try:
        defaults = zoo.options(str(model.get("name")))
    except ValueError:
        return  # an unknown model: the zoo names the valid ones when it is built
    for key, value in model.items():
        wanted = _numeric_kind(defaults.get(key), value)
        if wanted is not None:
            raise ConfigError(f"model.{key}={value!r} is invalid: it must be {wanted}")


def _numeric_kind(default: Any, value: Any) -> str | None:
    """What `value` must be ("an integer", "numbers", ...) when it does not match the numeric
    `default`; None when it does, or when the default is not numeric."""
    listed = isinstance(default, (list, tuple)) and len(default) > 0
    examples = list(default) if listed else [default]
    if not all(_number(d) for d in examples):
        return None
    integer = all(isinstance(d, int) for d in examples)
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    fits = all(_number(v) and (isinstance(v, int) or not integer) for v in values)
    if fits and (listed or len(values) == 1):
        return None
    if listed:
        return "integers" if integer else "numbers"
    return "an integer" if integer else "a number"


def _non_negative(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value >= 0


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
    amp = _amp(cfg, device)
    backend = _compiler(cfg, device)
    # Only the training step runs compiled: evaluation and certificates walk `model` itself.
    train_forward = torch.compile(model, backend=backend) if backend else None
    return Job(data, model, loss, optimizer, device, eps, schedule, augment, amp, train_forward)


# What fit adds to evaluate's metrics: per epoch, on the test split, and the run's cost.
_EPOCH = ("train/loss", "train/lr", "train/epoch_seconds")
_TEST_ONLY = ("lipschitz_lower", "bound_tightness")
_COST = (
    "train/seconds",
    "train/images_per_second",
    "train/peak_memory_mb",
    "train/steps",
    "train/epochs_done",
    "model/params",
)


def logged_metrics(cfg: DictConfig) -> set[str]:
    """The names of the metrics a job of `cfg` logs and returns (what a sweeper can optimise):
    the last epoch's `train/…` and `val/…` (no `val/…` when data.val_size is 0), `test/…`,
    and the cost."""
    eps = [float(e) for e in cfg.eval.eps]
    labels = torch.zeros(1, dtype=torch.long)
    split = {*summarize(torch.zeros(1, 2), labels, torch.zeros(1), eps), "lipschitz_bound"}
    names = {*_EPOCH, *_COST, *(f"test/{k}" for k in (*split, *_TEST_ONLY))}
    if (cfg.data.get("val_size", 0.1) or 0) != 0:
        names |= {f"val/{k}" for k in split}
    return names


def checkpoint_folder(cfg: DictConfig) -> Path | None:
    """`train.checkpoint_dir` (None: checkpoints are off), checked writable where it is, or
    where it would be made: a run that writes no checkpoint leaves no empty folder behind."""
    setting = cfg.train.get("checkpoint_dir", None)
    if setting is None:
        return None
    folder = Path(str(setting))
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise OutputDirError("", "Not a directory")
        writable_dir(existing, "train.checkpoint_dir", create=False)
    except OutputDirError as exc:
        raise OutputDirError(
            f"train.checkpoint_dir={str(setting)!r} cannot be written ({exc.reason}); set "
            "train.checkpoint_dir to a writable folder, or to null for no checkpoints",
            exc.reason,
        ) from None
    return folder


@dataclass
class _Checkpoints:
    """The checkpoint of one run: `<train.checkpoint_dir>/<experiment>/<config hash>.pt`, what
    it must hold to be resumed (the same store, a run that exists and has not finished), and
    whether this process wrote one."""

    path: Path
    every: int
    tracker: RunTracker
    written: bool = False

    def resumable(self) -> dict[str, Any] | None:
        """The checkpoint to go on from, if there is one this run can resume."""
        state = checkpoint.load(self.path)
        if state is None:
            return None
        meta = state["meta"]
        if meta.get("uri") != self.tracker.uri:
            log.warning(
                "checkpoint %s belongs to tracking store %s, not %s: starting over",
                self.path,
                meta.get("uri"),
                self.tracker.uri,
            )
            return None
        try:
            run = self.tracker.client.get_run(meta["run_id"])
        except Exception as exc:
            log.warning("checkpoint %s: run %s is gone (%s): starting over", self.path, meta, exc)
            return None
        if run.info.lifecycle_stage == "deleted" or run.info.status == "FINISHED":
            log.info(
                "checkpoint %s: run %s is %s: starting over",
                self.path,
                run.info.run_id,
                run.info.status if run.info.lifecycle_stage != "deleted" else "deleted",
            )
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        state["meta"] = {
            "run_id": self.tracker.run_id,
            "uri": self.tracker.uri,
            "config_hash": self.tracker.config_hash,
        }
        checkpoint.save(self.path, state)
        self.written = True

    def where(self, state: dict[str, Any]) -> str:
        progress = state["progress"]
        at = f"epoch {progress['epoch']}"
        if progress["order"] is not None:
            at = f"epoch {progress['epoch'] + 1}, batch {progress['batch']}"
        return at


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one configuration, log it to MLflow, return its final metrics.

    In a sweep (or with `tracking.resume=true`) a config that already has a FINISHED run is
    skipped, and so is one another process is training (`RunTracker.claim`). A config whose
    run was stopped with a checkpoint (`train.checkpoint_dir`) goes on from it, in the same
    MLflow run, unless `tracking.resume=false`."""
    threads = _threads(cfg)
    torch.set_num_threads(threads)
    allocator = tune_allocator()
    log.info("intra-op threads: %d, allocator: %s", threads, allocator)
    check_tracking_uri(resolve_tracking_uri(cfg.tracking.get("uri")))
    _check_train(cfg)
    folder = checkpoint_folder(cfg)
    job = build(cfg)
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = HydraConfig.get().sweep.dir
    tracker = RunTracker(cfg, parent_run_id=parent_run_id(sweep_dir))
    saver = None
    if folder is not None:
        path = checkpoint.checkpoint_path(folder, experiment_name(cfg), tracker.config_hash)
        saver = _Checkpoints(path, int(cfg.train.get("checkpoint_every", 0)), tracker)
    resume = cfg.tracking.get("resume", "auto")
    if not (resume is True or (resume == "auto" and sweep_dir is not None)):
        if saver is None:
            return _train(cfg, job, tracker)
        claim = tracker.claim()  # two identical runs must not share one checkpoint
        if isinstance(claim, str):
            log.warning("%s trains this config too: this run keeps no checkpoint", claim)
            return _train(cfg, job, tracker)
        try:
            return _train(cfg, job, tracker, saver=saver, resume=resume is not False)
        finally:
            claim.release()
    twin = tracker.finished_twin()
    if twin is not None:
        log.info("skipping: this config already has FINISHED run %s", twin.info.run_id)
        return dict(twin.data.metrics)
    claim = tracker.claim()
    if isinstance(claim, str):
        log.info("skipping: this config is being trained by %s", claim)
        return {}
    try:
        twin = tracker.finished_twin()  # finished while this process was claiming it
        if twin is not None:
            log.info("skipping: this config already has FINISHED run %s", twin.info.run_id)
            return dict(twin.data.metrics)
        return _train(cfg, job, tracker, server_claim=claim.path is None, saver=saver)
    finally:
        claim.release()


class Preempted(RuntimeError):
    """The launcher (submitit) stopped the job to requeue it, after its checkpoint."""


def _train(
    cfg: DictConfig,
    job: Job,
    tracker: RunTracker,
    *,
    server_claim: bool = False,
    saver: _Checkpoints | None = None,
    resume: bool = True,
) -> dict[str, float]:
    dev = job.device
    split = {
        name: (getattr(job.data, name).x.to(dev), getattr(job.data, name).y.to(dev))
        for name in ("train", "val", "test")
    }
    state = saver.resumable() if saver is not None and resume else None
    if state is not None:
        tracker.resume(state["meta"]["run_id"])
        log.info(
            "resuming MLflow run %s from %s (%s)", tracker.run_id, saver.path, saver.where(state)
        )
        _log_missing_epochs(tracker, state["progress"]["history"])
    else:
        tracker.start()
        if server_claim:
            holder = tracker.contested()
            if holder is not None:
                log.info("skipping: this config is being trained by run %s", holder)
                return {}
    log.info("MLflow run %s (%s)", tracker.run_id, tracker.uri)
    budget = cfg.train.get("budget_minutes")
    # With checkpoints, a signal stops the loop at its next step, once it has checkpointed.
    stopping = signals.deferred() if saver is not None else contextlib.nullcontext()
    try:
        with stopping:
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
                autocast=job.amp,
                train_forward=job.train_forward,
                resume=state,
                checkpoint=saver.save if saver is not None else None,
                checkpoint_every=saver.every if saver is not None else 0,
                stop_requested=signals.stop_requested if saver is not None else None,
            )
            if result.interrupted:
                log.info("checkpoint written to %s: the same command resumes the run", saver.path)
        final = {f"test/{k}": v for k, v in result.test.metrics.items()}
        final.update(result.cost)
        tracker.log_metrics(final, step=len(result.history))
        tags = {"stopped_by": "budget" if result.stopped_at_budget else "epochs"}
        box = diameter(job.data.train.x)
        reason = why_degenerate(final["test/accuracy"], split["test"][1], result.test.radii, box)
        if reason is not None:
            log.warning("degenerate run: %s; reports keep it off fronts", reason)
            tags[DEGENERATE] = reason
        tracker.set_tags(tags)
        tracker.log_certificates("test", result.test)
        if cfg.tracking.get("log_model", True):
            tracker.log_models(job.model, export_vanilla(job.model))
    except KeyboardInterrupt as exc:
        orphaned = watchdog.orphaned()
        _stopped(tracker, saver, orphaned or exc)
        if orphaned:  # a launcher's worker whose sweep died: take no further job
            logging.shutdown()
            os._exit(128 + signal.SIGTERM)
        raise
    except SystemExit:  # submitit's requeue, after the checkpoint
        name = signal.Signals(signals.received()).name if signals.received() else "its launcher"
        _stopped(tracker, saver, Preempted(f"stopped by {name} and requeued"))
        raise
    except Exception as exc:
        tracker.end("FAILED", exc)
        if saver is not None:
            checkpoint.remove(saver.path)
        raise
    tracker.end("FINISHED")
    if saver is not None:
        checkpoint.remove(saver.path)
    metrics = dict(result.history[-1])
    metrics.update(final)
    log.info(
        "test accuracy %.4f, mean certificate %.4f",
        final["test/accuracy"],
        final["test/mean_certificate"],
    )
    return metrics


CHECKPOINTED: list[str] = []  # runs this process stopped with a checkpoint (for main's line)


def _stopped(tracker: RunTracker, saver: _Checkpoints | None, why: BaseException) -> None:
    """Close a run a signal stopped: KILLED, and with a checkpoint, tagged with its file."""
    if saver is not None and saver.written and tracker.run_id is not None:
        tracker.set_tags({"tradeoff.checkpoint": str(saver.path.resolve())})
        CHECKPOINTED.append(tracker.run_id)
    tracker.end("KILLED", why)


def _log_missing_epochs(tracker: RunTracker, history: list[dict[str, float]]) -> None:
    """Log the epochs a checkpoint holds that the run lacks: a checkpoint is written before
    its epoch is logged, so a kill between the two loses no epoch."""
    logged = tracker.logged_steps("train/loss")
    for epoch, metrics in enumerate(history, start=1):
        if epoch not in logged:
            tracker.log_metrics(metrics, step=epoch)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, float]:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except (ValueError, TrainingDiverged) as exc:
        # Config, data and tracking errors name their own fix: one line, no traceback.
        if multirun:
            raise
        print(f"{_program()}: error: {exc}", file=sys.stderr)
        sys.exit(1 if isinstance(exc, TrainingDiverged) else 2)
    except Exception as exc:
        line = store_failure(exc, resolve_tracking_uri(cfg.tracking.get("uri")))
        if line is None or multirun:
            raise
        print(f"{_program()}: error: {line}", file=sys.stderr)
        sys.exit(1)


def _program() -> str:
    return Path(sys.argv[0]).name or "tradeoff-train"


def main() -> None:
    """Console entry point (`tradeoff-train`, and `tradeoff-sweep` through it): SIGTERM, SIGUSR1
    and SIGINT stop the run (or sweep) in one line, its runs checkpointed and marked KILLED,
    exit 128 + signal."""
    signals.install()
    try:
        _hydra_main()
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, signals.Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        message = f"stopped by {name}; runs in progress are marked KILLED"
        if CHECKPOINTED:
            message = (
                f"stopped by {name}; runs in progress are checkpointed and marked KILLED: "
                "the same command resumes them"
            )
        print(f"{_program()}: {message}", file=sys.stderr)
        signals.exit_now(128 + signum)


if __name__ == "__main__":
    main()
