"""Marks shared by the pages: runs as points, fronts as steps, the front runs' line styles."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from .data import GROUP, ReportData
from .frame import hyperparameters, spread_column
from .layout import header
from .style import EXPERIMENT_MARKERS, RUN_LINESTYLES, shades

__all__ = [
    "REPEATS_NOTE",
    "error_bars",
    "run_legend",
    "run_legend_title",
    "run_styles",
    "scatter",
    "step_front",
]

REPEATS_NOTE = " Seeds of one config: one point at their mean, error bars ± 1 std."


def scatter(ax: Axes, data: ReportData, runs: pd.DataFrame, xcol: str, ycol: str) -> None:
    """Every run a point: colour = its group (loss family or `--by`), marker = experiment."""
    for (family, experiment), group in runs.groupby([GROUP, "experiment"], sort=False):
        ax.scatter(
            group[xcol],
            group[ycol],
            s=42,
            marker=data.marker(str(experiment)),
            color=data.colour(str(family)),
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
            alpha=0.9,
        )


def error_bars(ax: Axes, data: ReportData, runs: pd.DataFrame, xcol: str, ycol: str) -> None:
    """± one standard deviation over the seeds, in both directions, around each row that folds
    several seed repeats (`frame.seed_repeats`); rows of one run get none."""
    if "seeds" not in runs:
        return
    repeated = runs[runs["seeds"] > 1]
    for family, group in repeated.groupby(GROUP, sort=False):
        spreads = [
            group[spread_column(c)].astype(float) if spread_column(c) in group else None
            for c in (xcol, ycol)
        ]
        ax.errorbar(
            group[xcol].astype(float),
            group[ycol].astype(float),
            xerr=spreads[0],
            yerr=spreads[1],
            fmt="none",
            ecolor=data.colour(str(family)),
            elinewidth=1.0,
            capsize=2.5,
            alpha=0.8,
            zorder=2.8,
        )


def step_front(
    ax: Axes, xs: np.ndarray, ys: np.ndarray, x_max: bool = True, **kwargs: object
) -> None:
    """The attainment line of a 2-D front, in steps from point to point along x; `x_max`:
    whether x is maximised (robustness) or minimised (cost), which sets the side of each step."""
    order = np.lexsort((-ys, xs))
    style = "steps-pre" if x_max else "steps-post"
    ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], drawstyle=style, **kwargs)


def run_legend_title(data: ReportData) -> str:
    """The title of the front runs' legend: whose run id a row of several seeds shows."""
    return "front run · run id" + (" of its first seed" if data.repeats else "")


def _run_handle(style: dict[str, object], label: str, lw: float, ms: float) -> Line2D:
    """Legend entry of one front run drawn in `style` (see `run_styles`)."""
    return Line2D(
        [],
        [],
        color=style["color"],
        ls=style["ls"],
        lw=lw,
        marker=style["marker"],
        ms=ms,
        mec="white",
        label=label,
    )


def run_styles(data: ReportData, runs: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per run: a shade of its group's colour of its own (light to dark in the order of
    `runs`, along the front: more accurate to more robust), and within its group a line
    style and a marker of its own."""
    palette = {
        group: shades(data.colour(str(group)), int(n))
        for group, n in runs[GROUP].value_counts().items()
    }
    seen: dict[str, int] = {}
    out = {}
    for _, row in runs.iterrows():
        k = seen.get(row[GROUP], 0)
        seen[row[GROUP]] = k + 1
        out[row["run_id"]] = {
            "color": palette[row[GROUP]][k],
            "ls": RUN_LINESTYLES[k % len(RUN_LINESTYLES)],
            "marker": EXPERIMENT_MARKERS[k % len(EXPERIMENT_MARKERS)],
        }
    return out


def run_legend(
    data: ReportData, runs: pd.DataFrame, styles: dict, lw: float, ms: float
) -> list[Line2D]:
    """Legend entries of the front runs drawn, under a heading per group (loss family)."""
    handles: list[Line2D] = []
    for family in data.groups():
        mine = runs[runs[GROUP] == family]
        if mine.empty:
            continue
        handles.append(header(family))
        for _, row in mine.iterrows():
            label = hyperparameters(row, greek=True, extra=data.varying)
            if len(data.experiments) > 1:
                label += f" [{row['experiment']}]"
            label += f" · {str(row['run_id'])[:8]}"
            handles.append(_run_handle(styles[row["run_id"]], label, lw=lw, ms=ms))
    return handles
