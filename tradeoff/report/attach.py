"""Attach a written report to the sweep parent runs whose job runs it draws, so that the MLflow
UI shows each sweep's front (PNG), report (PDF) and front table (CSV) on its parent run."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

__all__ = ["ARTIFACT_FOLDER", "attach_report", "sweep_parents"]

ARTIFACT_FOLDER = "report"

log = logging.getLogger(__name__)


def sweep_parents(runs: pd.DataFrame, parent: str | None = None) -> list[str]:
    """`parent` if given, else the parent run ids of `runs`, in order of first appearance."""
    if parent:
        return [parent]
    if "parent_run_id" not in runs:
        return []
    return list(dict.fromkeys(runs["parent_run_id"].dropna().astype(str)))


def attach_report(client, parents: Iterable[str], files: Sequence[Path]) -> list[str]:
    """Log `files` under `report/` of each of `parents` that is a sweep run (tag
    `tradeoff.role=sweep`); return the runs attached to. A run that cannot be written (a
    read-only store, a deleted run) is reported as a warning: the report itself is written."""
    from mlflow.exceptions import MlflowException

    attached = []
    for run_id in parents:
        try:
            run = client.get_run(run_id)
            if run.data.tags.get("tradeoff.role") != "sweep":
                continue
            for path in files:
                client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
        except (MlflowException, OSError) as exc:
            log.warning("could not attach the report to sweep run %s: %s", run_id, exc)
            continue
        attached.append(run_id)
        names = ", ".join(f"{ARTIFACT_FOLDER}/{Path(p).name}" for p in files)
        log.info("attached to sweep run %s (%s) as %s", run_id, run.info.run_name, names)
    return attached
