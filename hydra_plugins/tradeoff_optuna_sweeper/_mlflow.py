"""The study's MLflow parent run: found again on resume, closed at the end with the study's
summary metrics (`tradeoff.tracking.close_parent_run`), and its trials' runs.

The parent is identified by the tags `tradeoff.role=sweep`, `optuna.study_name` and
`optuna.storage` (the URL without password), so running the same command again — or on another
machine with the same tracking server — reopens the same parent instead of making a new one.
Job runs find it through `tradeoff.tracking.PARENT_RUN_ENV` (or the sweep directory's
`mlflow_parent_run.json`) and tag themselves `optuna.trial` from the `sweep.trial` override.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric
from omegaconf import DictConfig

from tradeoff import tracking
from tradeoff.tracking import (
    close_parent_run,
    experiment_name,
    open_experiment,
    open_parent_run,
    with_retries,
    write_parent_file,
)

__all__ = ["StudyRun"]

log = logging.getLogger(__name__)


class StudyRun:
    """The MLflow parent run of one Optuna study, in the experiment its jobs log to."""

    def __init__(self, config: DictConfig) -> None:
        self.uri = tracking.resolve_tracking_uri(config.tracking.get("uri"))
        tracking.check_tracking_uri(self.uri)
        # With the lock that keeps processes sharing a new sqlite store from migrating it at once.
        self.client = tracking.open_client(self.uri)
        self.experiment = experiment_name(config)
        self.experiment_id = open_experiment(self.client, config)
        self.run_id: str | None = None
        self._created = False
        self._previous_env: str | None = None

    def open(self, *, tags: Mapping[str, str], description: str, sweep_dir: Path) -> str:
        """Find the study's parent run (reopened as RUNNING) or create it; export its id."""
        self._previous_env = os.environ.get(tracking.PARENT_RUN_ENV)
        identity = {k: tags[k] for k in ("optuna.study_name", "optuna.storage")}
        # Tags that may change between runs of the study (sampler, n_trials, sweep_dir, ...).
        latest = {**tags, "sweep_dir": str(sweep_dir)}
        self.run_id, self._created = open_parent_run(
            self.client,
            self.experiment_id,
            identity,
            run_name=f"study {tags['optuna.study_name']}",
            tags=latest,
            new_tags={
                tracking.NOTE: description,
                # launched from an outer sweep: nest under it
                **({"mlflow.parentRunId": self._previous_env} if self._previous_env else {}),
            },
        )
        log.info(
            "MLflow study run %s %s (experiment %r)",
            self.run_id,
            "created" if self._created else "reopened",
            self.experiment,
        )
        os.environ[tracking.PARENT_RUN_ENV] = self.run_id
        write_parent_file(sweep_dir, self.run_id, self.experiment_id, self.uri)
        return self.run_id

    def close(self, status: str, note: str | None = None) -> None:
        """End the parent run with the study's summary metrics (and `note` as its `error` tag,
        e.g. the signal that stopped it); restore the environment."""
        if self._previous_env is None:
            os.environ.pop(tracking.PARENT_RUN_ENV, None)
        else:
            os.environ[tracking.PARENT_RUN_ENV] = self._previous_env
        if self.run_id is not None:
            if note:
                with_retries(self.client.set_tag, self.run_id, "error", note)
            close_parent_run(
                self.client, self.run_id, status, experiment=self.experiment, created=self._created
            )

    def trial_runs(self, numbers: Iterable[int]) -> dict[int, Any]:
        """Trial number → the newest MLflow run of that trial under the parent."""
        out: dict[int, Any] = {}
        for number in numbers:
            query = (
                f"tags.`mlflow.parentRunId` = {tracking.quote_filter(self.run_id or '')} "
                f"and tags.`optuna.trial` = '{int(number)}'"
            )
            runs = with_retries(
                self.client.search_runs,
                [self.experiment_id],
                filter_string=query,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                out[int(number)] = runs[0]
        return out

    def kill_trial_runs(self, numbers: Iterable[int]) -> None:
        """Mark the still-RUNNING MLflow runs of dead trials KILLED."""
        for number, run in self.trial_runs(numbers).items():
            if run.info.status == "RUNNING":
                with_retries(self.client.set_terminated, run.info.run_id, "KILLED")
                with_retries(
                    self.client.set_tag,
                    run.info.run_id,
                    "error",
                    f"optuna trial {number}: its process stopped before the job ended",
                )

    def tag_child(self, run_id: str, study_name: str) -> None:
        with_retries(self.client.set_tag, run_id, "optuna.study_name", study_name)

    def log_study(
        self, frame: pd.DataFrame, pareto_yaml: Path, metrics: Mapping[str, float], step: int
    ) -> None:
        """The Pareto set as a table (`pareto.json`), `pareto.yaml`, and study counts."""
        assert self.run_id is not None
        existing = [a.path for a in with_retries(self.client.list_artifacts, self.run_id)]
        if "pareto.json" in existing:
            # log_table appends to an existing table; a resumed study replaces its Pareto set,
            # so write the file in log_table's format ourselves.
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "pareto.json"
                frame.to_json(path, orient="split", index=False, date_format="iso")
                with_retries(self.client.log_artifact, self.run_id, str(path))
        else:
            with_retries(
                self.client.log_table, self.run_id, data=frame, artifact_file="pareto.json"
            )
        with_retries(self.client.log_artifact, self.run_id, str(pareto_yaml))
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with_retries(self.client.log_batch, self.run_id, metrics=batch)
