"""The Hydra callback that makes every job process stop cleanly: SIGTERM and SIGINT handled
(`tradeoff.signals`) in whatever process runs the job, and a launcher's workers watching the
sweep process that started them (`tradeoff.watchdog`)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from . import signals, watchdog

__all__ = ["ProcessCallback"]


class ProcessCallback(Callback):
    """Hydra callback: record the sweep process; in each job, handle signals and, in a worker
    process, watch the sweep process."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        watchdog.record_sweep_process()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        signals.install()
        watchdog.watch_parent()
