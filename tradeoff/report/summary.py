"""A sweep's results in five numbers, logged on its MLflow parent run when the sweep ends.

The same frame and front code as the report, so the parent run's metrics agree with
`tradeoff-report EXPERIMENT --parent RUN_ID`.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    seed_repeats,
    select_runs,
)

__all__ = ["extra_objectives", "summary_metrics", "sweep_summary"]


def _name(metric: str) -> str:
    return metric.removeprefix("metrics.").replace("/", "_")


def summary_metrics(
    runs: pd.DataFrame,
    x: str = DEFAULT_X,
    y: str = DEFAULT_Y,
    reference: Sequence[float] | None = REFERENCE,
    *,
    z: Sequence[str] = (),
) -> dict[str, float]:
    """`sweep/runs` (FINISHED job runs), and over those with both objectives, their seed
    repeats folded into their means (`seed_repeats`): `sweep/front_runs`, `sweep/hypervolume`,
    `sweep/best_<y>` and `sweep/best_<x>` (e.g. `sweep/best_test_accuracy`).

    With further objectives `z` (a study's cost objective), `sweep/hypervolume` is that of all
    of them, x, y and `z`, from `reference` (one value per objective; None: the worst corner,
    `default_reference`), and `sweep/hypervolume_2d` the one of x and y alone, from (0, 0)."""
    out = {"sweep/runs": float(len(runs))}
    try:
        x_col, y_col = metric_column(runs, x), metric_column(runs, y)
    except ReportError:  # no run has both objectives: nothing more to say
        return out
    xy = runs[[x_col, y_col]].astype(float)
    done = seed_repeats(runs[np.isfinite(xy).all(axis=1)])
    if done.empty:
        return out
    out["sweep/front_runs"] = float(pareto_front(done, x_col, y_col).sum())
    z_cols = [metric_column(done, m, required=False) for m in z]
    z_cols = [c for c in z_cols if c in done and done[c].notna().any()]
    if z_cols:
        if reference is not None and len(tuple(reference)) != 2 + len(z_cols):
            reference = None
        out["sweep/hypervolume"] = hypervolume(done, x_col, y_col, reference, z=z_cols)
        out["sweep/hypervolume_2d"] = hypervolume(done, x_col, y_col, REFERENCE)
    else:
        out["sweep/hypervolume"] = hypervolume(done, x_col, y_col, reference)
    out[f"sweep/best_{_name(y)}"] = float(done[y_col].astype(float).max())
    out[f"sweep/best_{_name(x)}"] = float(done[x_col].astype(float).max())
    return out


def extra_objectives(objectives: str, runs: pd.DataFrame, x: str, y: str) -> list[str]:
    """The objectives of an Optuna study (its parent's `optuna.objectives` tag, comma-separated)
    beyond the report's x and y: each as its test counterpart when the runs logged one
    (`val/accuracy` is `test/accuracy`), the study's cost objectives as they are."""
    out = []
    for name in filter(None, (o.strip() for o in objectives.split(","))):
        test = "test/" + name.removeprefix("val/") if name.startswith("val/") else name
        metric = test if f"metrics.{test}" in runs else name
        if metric not in (x, y, *out) and f"metrics.{metric}" in runs:
            out.append(metric)
    return out


def sweep_summary(experiment: str, parent: str, tracking_uri: str) -> dict[str, float]:
    """`summary_metrics` of the FINISHED job runs of sweep run `parent` in `experiment`, the
    front over those not degenerate; `sweep/runs` counts them all and
    `sweep/degenerate_runs` those left out. An Optuna study with more than two objectives (its
    parent's `optuna.objectives` tag) gets the hypervolume of all of them."""
    try:
        selection = select_runs(experiment, tracking_uri, parent, include_degenerate=True)
    except ReportError:  # no FINISHED job run (every job failed)
        return {"sweep/runs": 0.0}
    runs = selection.runs
    sound = runs[runs["degenerate"].isna()]
    tags = selection.client.get_run(parent).data.tags
    z = extra_objectives(tags.get("optuna.objectives", ""), runs, DEFAULT_X, DEFAULT_Y)
    out = summary_metrics(sound, z=z) if len(sound) else {}
    out["sweep/runs"] = float(len(runs))
    out["sweep/degenerate_runs"] = float(len(runs) - len(sound))
    return out
