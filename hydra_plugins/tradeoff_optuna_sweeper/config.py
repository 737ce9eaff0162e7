"""The sweeper's structured config, registered as `hydra/sweeper=tradeoff_optuna`.

Kept free of heavy imports: Hydra imports this module on every start while scanning plugins.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

__all__ = ["SAMPLERS", "TradeoffOptunaSweeperConf"]

# Sampler names accepted by `hydra.sweeper.sampler`.
SAMPLERS = ("tpe", "nsgaii", "random", "gp")


def _default_objectives() -> list[Any]:
    return [{"val/accuracy": "maximize"}, {"val/mean_certificate": "maximize"}]


@dataclass
class TradeoffOptunaSweeperConf:
    """Keys of `hydra.sweeper` (documented in docs/optuna.md)."""

    _target_: str = (
        "hydra_plugins.tradeoff_optuna_sweeper.tradeoff_optuna_sweeper.TradeoffOptunaSweeper"
    )
    # Metric names returned by the task, each with a direction: a list of one-key mappings
    # ({val/accuracy: maximize}) or "name:direction" strings. A list, so that a sweep file
    # replaces the default objectives instead of merging into them.
    objectives: list[Any] = field(default_factory=_default_objectives)
    sampler: str = "tpe"  # tpe | nsgaii | random | gp
    seed: int | None = None  # offset by the trials already in the study when resuming
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the sampler
    # Optuna storage: sqlite:///optuna.db, postgresql://..., journal:PATH or PATH.log; null
    # keeps the study in memory (no resume).
    storage: str | None = "sqlite:///optuna.db"
    study_name: str | None = None  # null = sweep.name, else "tradeoff"
    n_trials: int = 20  # finished trials the study should have in total
    n_jobs: int = 1  # trials asked for at once and handed to the launcher as one batch
    heartbeat_interval: int | None = 60  # seconds; null disables stale-trial detection
    grace_period: int | None = None  # seconds without heartbeat before a trial is stale
    max_retry: int = 1  # how often a stale (killed) trial's parameters are re-queued
    # tradeoff.tracking.SweepCallback leaves the MLflow parent run to this sweeper.
    manages_mlflow_parent: bool = True
    # Search space in Hydra's override grammar, e.g. {loss: "choice(tau_cce, hkr)",
    # loss.tau: "tag(log, interval(0.1, 1000))"}.
    params: dict[str, Any] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="tradeoff_optuna",
    node=TradeoffOptunaSweeperConf,
    provider="tradeoff_optuna_sweeper",
)
