"""The sweeper: an Optuna study driven by ask-and-tell through any Hydra launcher.

Each round asks Optuna for up to `n_jobs` trials, turns their parameters into Hydra overrides,
hands the batch to the launcher, and tells Optuna the objectives read from each job's returned
metrics (a failed job or a missing/NaN metric is told FAIL, and the study goes on). Rounds go on
until the study holds `n_trials` finished trials — counted over every process and every run of
the command, so running it again resumes, and several processes can share a study.
"""

from __future__ import annotations

import logging
import math
import signal
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from tradeoff import signals

from ._checks import check_objectives, check_resume, void_numbers, void_trial
from ._mlflow import StudyRun
from ._space import SearchSpace, SweeperConfigError
from ._storage import (
    Heartbeat,
    RetryStale,
    fail_stale,
    open_storage,
    redact,
    retried_numbers,
)
from .config import SAMPLERS

__all__ = ["TradeoffOptunaSweeperImpl", "make_sampler", "parse_objectives"]

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
_ALIASES = {"max": "maximize", "min": "minimize"}
MLFLOW_RUN_ATTR = "mlflow_run_id"


def parse_objectives(items: Sequence[Any]) -> list[tuple[str, str]]:
    """`[{val/accuracy: maximize}, "val/mean_certificate:maximize"]` → [(metric, direction)]."""
    if isinstance(items, (str, Mapping)) or not items:
        raise SweeperConfigError(
            f"hydra.sweeper.objectives={items!r}: give a non-empty list such as "
            "[{val/accuracy: maximize}, {val/mean_certificate: maximize}]"
        )
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, Mapping) and len(item) == 1:
            ((name, direction),) = item.items()
        elif isinstance(item, str) and ":" in item:
            name, direction = item.rsplit(":", 1)
        else:
            raise SweeperConfigError(
                f"hydra.sweeper.objectives: {item!r} must be one 'metric: direction' pair, "
                "e.g. {val/accuracy: maximize} or 'val/accuracy:maximize'"
            )
        direction = _ALIASES.get(str(direction).strip().lower(), str(direction).strip().lower())
        if direction not in DIRECTIONS:
            raise SweeperConfigError(
                f"hydra.sweeper.objectives: direction {direction!r} of {name!r} is invalid; "
                f"use {' or '.join(DIRECTIONS)}"
            )
        out.append((str(name).strip(), direction))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SweeperConfigError(f"hydra.sweeper.objectives names a metric twice: {names}")
    return out


def make_sampler(
    name: str,
    seed: int | None,
    kwargs: Mapping[str, Any],
    *,
    n_objectives: int,
    n_trials: int,
) -> optuna.samplers.BaseSampler:
    """The sampler called `name` (one of SAMPLERS), seeded, with extra keyword arguments."""
    key = str(name).strip().lower()
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
        "gp": getattr(optuna.samplers, "GPSampler", None),
    }
    if key not in classes:
        raise SweeperConfigError(
            f"hydra.sweeper.sampler={name!r} is unknown; valid samplers: {', '.join(SAMPLERS)}"
        )
    cls = classes[key]
    if cls is None:
        raise SweeperConfigError(
            f"hydra.sweeper.sampler=gp needs optuna.samplers.GPSampler, which optuna "
            f"{optuna.__version__} lacks; upgrade optuna or use tpe"
        )
    if key == "nsgaii":
        population = int(kwargs.get("population_size", 50))
        if population >= n_trials:
            log.warning(
                "nsgaii: population_size=%d >= n_trials=%d, so every trial is in the first "
                "(random) generation; set hydra.sweeper.sampler_kwargs.population_size lower",
                population,
                n_trials,
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=seed, **dict(kwargs))
    except TypeError as exc:
        raise SweeperConfigError(
            f"hydra.sweeper.sampler_kwargs={dict(kwargs)!r} do not fit {cls.__name__}: {exc}"
        ) from None


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SweeperConfigError(
            f"hydra.sweeper.{name}={value!r} is invalid: it must be an integer >= 1"
            + (" or null" if allow_none else "")
        )


class TradeoffOptunaSweeperImpl:
    """See the module docstring and docs/optuna.md."""

    def __init__(
        self,
        objectives: Sequence[Any],
        sampler: str = "tpe",
        seed: int | None = None,
        sampler_kwargs: Mapping[str, Any] | None = None,
        storage: str | None = "sqlite:///optuna.db",
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        heartbeat_interval: int | None = 60,
        grace_period: int | None = None,
        max_retry: int = 1,
        manages_mlflow_parent: bool = True,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        plain = (
            OmegaConf.to_container(objectives) if OmegaConf.is_config(objectives) else objectives
        )
        self.objectives = parse_objectives(plain)
        self.metric_names = [n for n, _ in self.objectives]
        self.directions = [d for _, d in self.objectives]
        self.sampler_name = str(sampler).strip().lower()
        if self.sampler_name not in SAMPLERS:
            raise SweeperConfigError(
                f"hydra.sweeper.sampler={sampler!r} is unknown; valid samplers: "
                f"{', '.join(SAMPLERS)}"
            )
        self.seed = seed
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.storage_url = str(storage) if storage else None
        self.study_name = study_name
        _positive("n_trials", n_trials)
        _positive("n_jobs", n_jobs)
        _positive("heartbeat_interval", heartbeat_interval, allow_none=True)
        _positive("grace_period", grace_period, allow_none=True)
        if heartbeat_interval and grace_period is not None and grace_period <= heartbeat_interval:
            raise SweeperConfigError(
                f"hydra.sweeper.grace_period={grace_period} must exceed heartbeat_interval="
                f"{heartbeat_interval} (a live trial would be judged dead); use at least "
                f"{2 * heartbeat_interval}"
            )
        if not isinstance(max_retry, int) or max_retry < 0:
            raise SweeperConfigError(f"hydra.sweeper.max_retry={max_retry!r}: an integer >= 0")
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.max_retry = max_retry
        self.manages_mlflow_parent = manages_mlflow_parent
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.run: StudyRun | None = None
        self.job_idx = 0
        # Fails and re-queues dead trials, closing their MLflow runs (once self.run exists).
        self._on_stale = RetryStale(self.max_retry, self._close_stale_run)

    # -- Hydra plugin API ----------------------------------------------------------------------

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.job_idx = 0

    def sweep(self, arguments: list[str]) -> list[FrozenTrial]:
        """Run the study to `n_trials` finished trials; return the Pareto-optimal trials."""
        assert self.config is not None and self.hydra_context is not None
        config = self.config
        space = self._search_space(arguments)
        check_objectives(self.metric_names, config)
        study_name = self.study_name or config.get("sweep", {}).get("name") or "tradeoff"
        storage = open_storage(
            self.storage_url,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            on_stale=self._on_stale,
        )
        study = self._load_study(storage, study_name)
        check_resume(study, space)
        log.info(
            "Optuna study %r in %s: %s sampler, objectives %s, %d trial(s) already, target %d",
            study_name,
            redact(self.storage_url),
            self.sampler_name,
            ", ".join(f"{n} ({d})" for n, d in self.objectives),
            len(study.trials),
            self.n_trials,
        )
        log.info("search space:\n%s", space.describe())

        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        self.run = StudyRun(config)
        sweep = config.get("sweep", {}) or {}
        self.run.open(
            tags={
                "sweep": str(sweep.get("name") or study_name),
                "optuna.study_name": study_name,
                "optuna.storage": redact(self.storage_url),
                "optuna.sampler": self.sampler_name,
                "optuna.directions": ",".join(self.directions),
                "optuna.objectives": ",".join(self.metric_names),
                "optuna.n_trials": str(self.n_trials),
                "optuna.version": optuna.__version__,
            },
            description=str(sweep.get("description") or f"Optuna study {study_name}"),
            sweep_dir=sweep_dir,
        )
        status = "FAILED"
        try:
            with Heartbeat(study._storage, self.heartbeat_interval) as heartbeat:
                self._optimize(study, space, heartbeat)
            best = self._report(study, sweep_dir)
            status = "FINISHED"
            return best
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.run.close(status, note=_stopped_by() if status == "KILLED" else None)

    # -- study ---------------------------------------------------------------------------------

    def _search_space(self, arguments: Sequence[str]) -> SearchSpace:
        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        master = self.config
        overrides = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space = SearchSpace.parse(
            overrides,
            compose=lambda extra: loader.load_sweep_config(master, extra),
            group_options=loader.get_group_options,
            base=master,
        )
        if not space.sampled:
            raise SweeperConfigError(
                "the Optuna search space is empty: set hydra.sweeper.params or give sweep "
                "overrides, e.g. 'loss=choice(tau_cce,hkr)' 'loss.tau=tag(log,interval(0.1,1000))'"
            )
        return space

    def _load_study(self, storage: Any, study_name: str) -> optuna.Study:
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                directions=self.directions,
                load_if_exists=True,
            )
        except (ValueError, optuna.exceptions.OptunaError) as exc:
            raise SweeperConfigError(
                f"Optuna study {study_name!r} in {redact(self.storage_url)} cannot be used: {exc}"
            ) from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise SweeperConfigError(
                f"Optuna study {study_name!r} in {redact(self.storage_url)} has directions "
                f"{stored}, the config asks for {self.directions}; pick another study_name"
            )
        names = study.metric_names
        completed = any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        if names is not None and list(names) != self.metric_names and completed:
            raise SweeperConfigError(
                f"Optuna study {study_name!r} in {redact(self.storage_url)} optimises "
                f"{list(names)}, the config asks for {self.metric_names}; pick another study_name"
            )
        if names is not None and list(names) != self.metric_names:
            log.warning(
                "Optuna study %r optimised %s, but none of its trials completed: it now "
                "optimises %s",
                study_name,
                list(names),
                self.metric_names,
            )
            names = None
        if names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metric_names)
        # A resumed study must not re-draw its first parameters: offset the seed by its size.
        seed = None if self.seed is None else int(self.seed) + len(study.trials)
        study.sampler = make_sampler(
            self.sampler_name,
            seed,
            self.sampler_kwargs,
            n_objectives=len(self.directions),
            n_trials=self.n_trials,
        )
        return study

    def _fail_stale(self, study: optuna.Study) -> None:
        fail_stale(
            study,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            on_stale=self._on_stale,
            describe=self._run_of,
        )

    def _run_of(self, trial: FrozenTrial | Trial) -> dict[str, str]:
        """{"mlflow_run_id": ...} of the trial's newest MLflow run, if the study has one."""
        if self.run is None or self.run.run_id is None:
            return {}
        try:
            run = self.run.trial_runs([trial.number]).get(trial.number)
        except Exception as exc:  # bookkeeping only
            log.debug("could not look up the MLflow run of trial %d: %s", trial.number, exc)
            return {}
        return {MLFLOW_RUN_ATTR: run.info.run_id} if run is not None else {}

    def _optimize(self, study: optuna.Study, space: SearchSpace, heartbeat: Heartbeat) -> None:
        waiting_for: int | None = None
        while True:
            self._fail_stale(study)
            trials = study.get_trials(deepcopy=False)
            superseded = retried_numbers(trials) | void_numbers(trials)
            done = sum(t.state.is_finished() and t.number not in superseded for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            remaining = self.n_trials - done - running
            if remaining > 0:
                self._run_batch(study, space, min(self.n_jobs, remaining), heartbeat)
                continue
            if running == 0:
                return
            if not heartbeat.enabled:
                log.warning(
                    "%d trial(s) are RUNNING elsewhere; without heartbeats this process cannot "
                    "tell live ones from dead ones, so it does not wait for them",
                    running,
                )
                return
            if waiting_for != running:
                log.info(
                    "%d finished, %d trial(s) RUNNING in other processes: waiting for them "
                    "(a dead one is failed and re-queued after %ss without heartbeat)",
                    done,
                    running,
                    self.grace_period or 2 * (self.heartbeat_interval or 0),
                )
                waiting_for = running
            time.sleep(max(1, min(self.heartbeat_interval or 10, 10)))

    def _ask(self, study: optuna.Study) -> Trial:
        with warnings.catch_warnings():
            # The sweeper beats for its trials itself (optimize()'s thread does not run here).
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return study.ask()

    def _run_batch(
        self, study: optuna.Study, space: SearchSpace, size: int, heartbeat: Heartbeat
    ) -> None:
        assert self.launcher is not None and self.run is not None
        trials: list[Trial] = []
        batch: list[list[str]] = []
        try:
            for _ in range(size):
                trial = self._ask(study)
                trials.append(trial)
                heartbeat.add([trial._trial_id])
                batch.append([*space.suggest(trial), f"++sweep.trial={trial.number}"])
        except BaseException as exc:  # nothing ran: the trials asked for do not count
            heartbeat.discard([t._trial_id for t in trials])
            for trial in trials:
                void_trial(study, trial)
            if not trials or not isinstance(exc, ValueError):
                raise
            raise SweeperConfigError(  # check_resume let through a space Optuna refuses
                f"Optuna study {study.study_name!r}: trial {trials[-1].number} does not fit "
                f"the current search space ({exc}); the study is left as it was: restore its "
                "space, or use a new hydra.sweeper.study_name for a new one"
            ) from None
        for trial in trials:
            retry = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
            again = f" (retry of trial {retry})" if retry is not None else ""
            shown = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
            log.info("trial %d%s: %s", trial.number, again, shown or "(no sampled parameters)")
        try:
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        except BaseException as exc:
            self._abandon(study, trials, heartbeat, requeue=True, reason=_stopped_by(exc))
            raise
        self.job_idx += len(returns)
        try:
            runs = self.run.trial_runs(t.number for t in trials)
        except Exception as exc:  # the study goes on without run ids
            log.warning("could not look up the trials' MLflow runs: %s", exc)
            runs = {}
        study_name = study.study_name
        for trial, ret in zip(trials, returns, strict=True):
            run = runs.get(trial.number)
            if run is not None:
                trial.set_user_attr(MLFLOW_RUN_ATTR, run.info.run_id)
                try:
                    self.run.tag_child(run.info.run_id, study_name)
                except Exception as exc:
                    log.debug("could not tag run %s: %s", run.info.run_id, exc)
            values, reason = self._values(ret)
            heartbeat.discard([trial._trial_id])
            if values is None:
                log.warning("trial %d FAILED: %s", trial.number, reason)
                trial.set_user_attr("fail_reason", reason[:2000])
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, values)
                shown = ", ".join(
                    f"{n}={v:.4g}" for n, v in zip(self.metric_names, values, strict=True)
                )
                log.info("trial %d: %s", trial.number, shown)

    def _values(self, ret: JobReturn) -> tuple[list[float] | None, str]:
        """The objectives from a job's returned metrics, or None and why not."""
        if ret.status != JobStatus.COMPLETED:
            exc = ret._return_value
            return None, f"the job raised {type(exc).__name__}: {exc}"
        result = ret.return_value
        if isinstance(result, (int, float)) and len(self.metric_names) == 1:
            result = {self.metric_names[0]: result}
        if not isinstance(result, Mapping):
            return None, (
                f"the task returned {type(result).__name__}, not a mapping of metric name → value"
            )
        values = []
        for name in self.metric_names:
            if name not in result:
                available = ", ".join(sorted(map(str, result)))
                return None, (
                    f"objective {name!r} is not among the job's metrics ({available}); "
                    "fix hydra.sweeper.objectives"
                )
            try:
                value = float(result[name])
            except (TypeError, ValueError):
                return None, f"objective {name!r} is {result[name]!r}, not a number"
            if not math.isfinite(value):
                return None, f"objective {name!r} is {value}"
            values.append(value)
        return values, ""

    def _abandon(
        self,
        study: optuna.Study,
        trials: Sequence[Trial],
        heartbeat: Heartbeat,
        *,
        requeue: bool,
        reason: str,
    ) -> None:
        """Trials whose jobs did not come back (a signal, a launcher crash): FAIL with the
        reason and their MLflow run, maybe re-queued."""
        heartbeat.discard([t._trial_id for t in trials])
        for trial in trials:
            try:
                for key, value in {"fail_reason": reason, **self._run_of(trial)}.items():
                    trial.set_user_attr(key, value)
                frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                if requeue:
                    self._on_stale.requeue(study, frozen, reason)
            except Exception as exc:
                log.warning("could not mark trial %d FAIL: %s", trial.number, exc)
        if self.run is not None and self.run.run_id is not None:
            try:
                self.run.kill_trial_runs(t.number for t in trials)
            except Exception as exc:
                log.debug("could not close MLflow runs: %s", exc)

    def _close_stale_run(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.run is not None and self.run.run_id is not None:
            self.run.kill_trial_runs([trial.number])

    # -- results -------------------------------------------------------------------------------

    def _report(self, study: optuna.Study, sweep_dir: Path) -> list[FrozenTrial]:
        """Pareto set → pareto.yaml, the parent run (table + artifact + counts), and stdout."""
        assert self.run is not None
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            reasons = (t.user_attrs.get("fail_reason") for t in trials)
            first = next((r for r in reasons if r), "unknown")
            raise SweeperConfigError(
                f"Optuna study {study.study_name!r}: none of its {len(trials)} trial(s) "
                f"completed, so there is no Pareto set. First failure: {first}"
            )
        best = sorted(
            study.best_trials,
            key=lambda t: -t.values[0] if self.directions[0] == "maximize" else t.values[0],
        )
        rows = [
            {
                "trial": t.number,
                "mlflow_run_id": t.user_attrs.get(MLFLOW_RUN_ATTR),
                "values": dict(zip(self.metric_names, map(float, t.values), strict=True)),
                "params": dict(t.params),
            }
            for t in best
        ]
        document = {
            "study": study.study_name,
            "storage": redact(self.storage_url),
            "sampler": self.sampler_name,
            "objectives": [{n: d} for n, d in self.objectives],
            "trials": {k: v for k, v in counts.items() if v},
            "mlflow": {
                "tracking_uri": self.run.uri,
                "experiment": self.run.experiment,
                "parent_run_id": self.run.run_id,
            },
            "pareto": rows,
        }
        path = sweep_dir / "pareto.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        frame = pd.DataFrame(
            [
                {
                    "trial": r["trial"],
                    "mlflow_run_id": r["mlflow_run_id"],
                    **r["values"],
                    **r["params"],
                }
                for r in rows
            ]
        )
        metrics = {
            "optuna/n_complete": counts.get("complete", 0),
            "optuna/n_fail": counts.get("fail", 0),
            "optuna/pareto_size": len(rows),
        }
        try:
            self.run.log_study(frame, path, metrics, step=len(trials))
        except Exception as exc:  # the study itself is safe in Optuna's storage
            log.warning("could not log the Pareto set to MLflow: %s", exc)
        table = format_table(study.study_name, rows, self.metric_names, counts)
        print(table, flush=True)
        log.info("Pareto set written to %s", path)
        return best


def _stopped_by(exc: BaseException | None = None) -> str:
    """Why a trial's job did not return: the signal that stopped the sweep, else `exc`."""
    signum = signals.received()
    if signum is not None:
        return f"the sweep was stopped by {signal.Signals(signum).name}"
    if exc is not None:
        return f"its job did not return ({type(exc).__name__}: {exc})"[:2000]
    return "its job did not return"


def format_table(
    study_name: str,
    rows: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    counts: Mapping[str, int],
) -> str:
    """The Pareto set as a short fixed-width table."""
    finished = sum(v for k, v in counts.items() if k not in ("running", "waiting"))
    head = (
        f"Pareto set of Optuna study {study_name!r}: {len(rows)} of {finished} finished "
        f"trial(s) ({counts.get('complete', 0)} complete, {counts.get('fail', 0)} failed)"
    )
    widths = [max(len(n), 8) for n in metric_names]
    header = (
        "  trial  "
        + "  ".join(f"{n:>{w}}" for n, w in zip(metric_names, widths, strict=True))
        + "  params"
    )
    lines = [head, header]
    for row in rows:
        values = "  ".join(
            f"{row['values'][n]:>{w}.4f}" for n, w in zip(metric_names, widths, strict=True)
        )
        params = " ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        lines.append(f"  {row['trial']:>5}  {values}  {params}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
