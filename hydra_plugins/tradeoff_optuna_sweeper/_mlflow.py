"""The study's MLflow parent run: found again on resume, closed at the end, and its trials' runs.

The parent is identified by the tags `tradeoff.role=sweep`, `optuna.study_name` and
`optuna.storage` (the URL without password), so running the same command again — or on another
machine with the same tracking server — reopens the same parent instead of making a new one.
Job runs find it through `tradeoff.tracking.PARENT_RUN_ENV` (or the sweep directory's
`mlflow_parent_run.json`) and tag themselves `optuna.trial` from the `sweep.trial` override.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from tradeoff import tracking
from tradeoff.tracking import ensure_experiment, experiment_name, git_commit, with_retries

__all__ = ["StudyRun"]

log = logging.getLogger(__name__)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class StudyRun:
    """The MLflow parent run of one Optuna study, in the experiment its jobs log to."""

    def __init__(self, config: DictConfig) -> None:
        self.uri = tracking.resolve_tracking_uri(config.tracking.get("uri"))
        tracking.check_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment_name(config)
        self.experiment_id = ensure_experiment(self.client, self.experiment)
        self.run_id: str | None = None
        self._previous_env: str | None = None

    def open(self, *, tags: Mapping[str, str], description: str, sweep_dir: Path) -> str:
        """Find the study's parent run (reopened as RUNNING) or create it; export its id."""
        self._previous_env = os.environ.get(tracking.PARENT_RUN_ENV)
        found = self._find(tags)
        if found is not None:
            self.run_id = found
            with_retries(self.client.update_run, found, status="RUNNING")
            log.info("MLflow study run %s reopened (experiment %r)", found, self.experiment)
        else:
            all_tags = {
                **tags,
                "tradeoff.role": "sweep",
                "git_commit": git_commit(),
                "mlflow.source.git.commit": git_commit(),
                "mlflow.note.content": description,
            }
            if self._previous_env:  # launched from an outer sweep: nest under it
                all_tags["mlflow.parentRunId"] = self._previous_env
            run = with_retries(
                self.client.create_run,
                self.experiment_id,
                run_name=f"study {tags['optuna.study_name']}",
                tags=all_tags,
            )
            self.run_id = run.info.run_id
            oldest = self._find(tags)
            if oldest is not None and oldest != self.run_id:
                # Another process of the same study created its parent at the same moment:
                # keep the oldest one, so the study has a single parent run.
                with_retries(self.client.delete_run, self.run_id)
                self.run_id = oldest
                with_retries(self.client.update_run, oldest, status="RUNNING")
            log.info("MLflow study run %s created (experiment %r)", self.run_id, self.experiment)
        # Tags that may change between runs of the study (sampler, n_trials, sweep_dir, ...).
        latest = {**tags, "sweep_dir": str(sweep_dir)}
        with_retries(
            self.client.log_batch,
            self.run_id,
            tags=[RunTag(k, str(v)) for k, v in latest.items()],
        )
        os.environ[tracking.PARENT_RUN_ENV] = self.run_id
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / tracking.PARENT_RUN_FILE).write_text(
            json.dumps(
                {"run_id": self.run_id, "experiment_id": self.experiment_id, "uri": self.uri}
            )
        )
        return self.run_id

    def _find(self, tags: Mapping[str, str]) -> str | None:
        keys = ("tradeoff.role", "optuna.study_name", "optuna.storage")
        wanted = {"tradeoff.role": "sweep", **{k: tags[k] for k in keys[1:]}}
        query = " and ".join(f"tags.`{k}` = {_quote(wanted[k])}" for k in keys)
        runs = with_retries(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=query,
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def close(self, status: str) -> None:
        """End the parent run and restore the environment the sweeper started with."""
        if self._previous_env is None:
            os.environ.pop(tracking.PARENT_RUN_ENV, None)
        else:
            os.environ[tracking.PARENT_RUN_ENV] = self._previous_env
        if self.run_id is not None:
            with_retries(self.client.set_terminated, self.run_id, status)

    def trial_runs(self, numbers: Iterable[int]) -> dict[int, Any]:
        """Trial number → the newest MLflow run of that trial under the parent."""
        out: dict[int, Any] = {}
        for number in numbers:
            query = (
                f"tags.`mlflow.parentRunId` = {_quote(self.run_id or '')} "
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
