"""What the sweeper checks before it asks Optuna for a trial, so that a mistake in the command
leaves the study as it was: objectives that the jobs log, and a search space that the study's
trials fit. Trials asked for but never run are void: they do not count towards `n_trials`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import optuna
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, check_distribution_compatibility
from optuna.trial import FrozenTrial, Trial, TrialState

from ._space import SearchSpace, SweeperConfigError, describe_distribution

__all__ = ["VOID_ATTR", "check_objectives", "check_resume", "void_numbers", "void_trial"]

VOID_ATTR = "tradeoff:void"  # system attribute of a trial asked for but never run


def check_objectives(metric_names: Sequence[str], config: DictConfig) -> None:
    """Each objective must be a metric the jobs return (`tradeoff.train.logged_metrics`):
    refused by name, with the closest ones, before any trial trains."""
    if "train" not in config or "eval" not in config:
        return  # not tradeoff's task: its metrics are not known in advance
    from tradeoff.train import logged_metrics

    logged = sorted(logged_metrics(config))
    for name in metric_names:
        if name in logged:
            continue
        close = difflib.get_close_matches(name, logged, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise SweeperConfigError(
            f"hydra.sweeper.objectives: the jobs do not log {name!r}; {hint}"
            f"they log {', '.join(logged)}"
        )


def check_resume(study: optuna.Study, space: SearchSpace) -> None:
    """The study's trials must fit `space`: Optuna refuses a parameter whose kind or
    categorical choices changed, and a queued trial's choice must still be one."""
    trials = study.get_trials(deepcopy=False)
    fix = "restore the study's space, or use a new hydra.sweeper.study_name for this one"
    for param in space.sampled:
        new = param.distribution
        recorded = (t.distributions[param.name] for t in trials if param.name in t.distributions)
        old = next(recorded, None)
        if old is not None:
            try:
                check_distribution_compatibility(old, new)
            except ValueError:
                raise SweeperConfigError(
                    f"hydra.sweeper.params: {param.name} is {describe_distribution(new)}, but "
                    f"Optuna study {study.study_name!r} has it as {describe_distribution(old)} "
                    f"and cannot change it; {fix}"
                ) from None
        if not isinstance(new, CategoricalDistribution):
            continue
        for trial in trials:
            queued = trial.system_attrs.get("fixed_params") or {}
            waiting = trial.state == TrialState.WAITING and param.name in queued
            if waiting and queued[param.name] not in new.choices:
                raise SweeperConfigError(
                    f"hydra.sweeper.params: queued trial {trial.number} of Optuna study "
                    f"{study.study_name!r} has {param.name}={queued[param.name]!r}, not "
                    f"one of {describe_distribution(new)}; {fix}"
                )


def void_trial(study: optuna.Study, trial: Trial) -> None:
    """Close a trial that was asked for but never run: FAIL, marked void (not counted), and,
    if it came from the queue (a re-queued or enqueued trial), queued again as it was."""
    storage = study._storage
    frozen = storage.get_trial(trial._trial_id)
    if frozen.state != TrialState.RUNNING:
        return
    storage.set_trial_system_attr(trial._trial_id, VOID_ATTR, True)
    storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    attrs = frozen.system_attrs
    if "fixed_params" in attrs or "failed_trial" in attrs:
        queued = {k: v for k, v in attrs.items() if k != VOID_ATTR}
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs=frozen.user_attrs,
                system_attrs=queued,
            )
        )


def void_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of void trials."""
    return {t.number for t in trials if t.system_attrs.get(VOID_ATTR)}
