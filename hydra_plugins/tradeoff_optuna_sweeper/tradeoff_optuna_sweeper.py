"""The Hydra `Sweeper` plugin class; the work is in `_impl` (imported only when used).

Hydra imports this module while scanning plugins on every start, so Optuna and MLflow are only
imported once the sweeper is actually instantiated.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import TradeoffOptunaSweeperConf  # noqa: F401  (registers the config)

__all__ = ["TradeoffOptunaSweeper"]


class TradeoffOptunaSweeper(Sweeper):
    """Runs an Optuna study: asks for `n_jobs` trials, launches them, tells the objectives."""

    def __init__(self, **options: Any) -> None:
        # Options are checked in setup(): errors raised here would reach the user wrapped in
        # Hydra's "Error in call to target" message.
        self.options = options
        self.sweeper: Any = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from ._impl import TradeoffOptunaSweeperImpl

        self.sweeper = TradeoffOptunaSweeperImpl(**self.options)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
