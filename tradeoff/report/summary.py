"""A sweep's results in five numbers, logged on its MLflow parent run when the sweep ends.

The same frame and front code as the report, so the parent run's metrics agree with
`tradeoff-report EXPERIMENT --parent RUN_ID`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .frame import (
    DEFAULT_X,
    DEFAULT_Y,
    REFERENCE,
    ReportError,
    hypervolume,
    metric_column,
    pareto_front,
    select_runs,
)

__all__ = ["summary_metrics", "sweep_summary"]


def _name(metric: str) -> str:
    return metric.removeprefix("metrics.").replace("/", "_")


def summary_metrics(
    runs: pd.DataFrame,
    x: str = DEFAULT_X,
    y: str = DEFAULT_Y,
    reference: tuple[float, float] = REFERENCE,
) -> dict[str, float]:
    """`sweep/runs` (FINISHED job runs), and over those with both objectives `sweep/front_runs`,
    `sweep/hypervolume`, `sweep/best_<y>` and `sweep/best_<x>` (e.g. `sweep/best_test_accuracy`)."""
    out = {"sweep/runs": float(len(runs))}
    try:
        x_col, y_col = metric_column(runs, x), metric_column(runs, y)
    except ReportError:  # no run has both objectives: nothing more to say
        return out
    xy = runs[[x_col, y_col]].astype(float)
    done = runs[np.isfinite(xy).all(axis=1)]
    if done.empty:
        return out
    out["sweep/front_runs"] = float(pareto_front(done, x_col, y_col).sum())
    out["sweep/hypervolume"] = hypervolume(done, x_col, y_col, reference)
    out[f"sweep/best_{_name(y)}"] = float(done[y_col].astype(float).max())
    out[f"sweep/best_{_name(x)}"] = float(done[x_col].astype(float).max())
    return out


def sweep_summary(experiment: str, parent: str, tracking_uri: str) -> dict[str, float]:
    """`summary_metrics` of the FINISHED job runs of sweep run `parent` in `experiment`, the
    front over those not degenerate; `sweep/runs` counts them all and
    `sweep/degenerate_runs` those left out."""
    try:
        selection = select_runs(experiment, tracking_uri, parent, include_degenerate=True)
    except ReportError:  # no FINISHED job run (every job failed)
        return {"sweep/runs": 0.0}
    runs = selection.runs
    sound = runs[runs["degenerate"].isna()]
    out = summary_metrics(sound) if len(sound) else {}
    out["sweep/runs"] = float(len(runs))
    out["sweep/degenerate_runs"] = float(len(runs) - len(sound))
    return out
