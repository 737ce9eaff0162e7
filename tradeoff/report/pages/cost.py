"""The cost page: accuracy and certified robust accuracy against what each run spent.

Drawn when the runs logged cost metrics (every run since the recipe's cost metrics): one column
per cost (wall-clock seconds of the fit, peak memory, parameters), one row for the report's
accuracy objective and one for CRA at a radius; each panel's front is the runs that no cheaper
run beats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator

from ..data import ReportData
from ..draw import REPEATS_NOTE, error_bars, scatter, step_front
from ..frame import COST_METRICS, cra_columns, pareto_front, radius_label
from ..labels import metric_label
from ..layout import Page, add_legend, legend_handles, new_page
from ..style import FRONT_COLOUR

__all__ = ["PAGE", "TITLE", "cost_columns", "has_cost", "page_cost"]

TITLE = "Accuracy and robustness vs training cost"
CRA_RADIUS = 36 / 255  # the radius of the cost page's CRA row, when the runs have it


def cost_columns(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, column) of each cost metric some run logged, in COST_METRICS order."""
    out = []
    for metric in COST_METRICS:
        column = f"metrics.{metric}"
        if column in runs and runs[column].notna().any():
            out.append((metric, column))
    return out


def has_cost(runs: pd.DataFrame) -> bool:
    """Whether any run logged a cost metric (runs from before cost was logged have none)."""
    return bool(cost_columns(runs))


def _cra_row(runs: pd.DataFrame) -> tuple[str, str] | None:
    """(label, column) of the CRA nearest CRA_RADIUS, if the runs logged any."""
    radii = cra_columns(runs)
    if not radii:
        return None
    eps, column = min(radii, key=lambda r: abs(r[0] - CRA_RADIUS))
    return f"test CRA at ε = {radius_label(eps)}", column


def page_cost(data: ReportData) -> Figure:
    """Accuracy (the y objective) and CRA against each cost metric, one panel each."""
    costs = cost_columns(data.runs)
    rows = [(metric_label(data.y), data.y_col)]
    cra = _cra_row(data.runs)
    if cra is not None:
        rows.append(cra)
    caption = (
        "What each run spent: the wall-clock seconds of its whole fit (training, validation, "
        "test), its peak memory (on CUDA the tensors' peak; on CPU the process's peak resident "
        "set, which also counts the data and, in a multirun sharing one process, the jobs "
        "before it) and its trainable parameters. Black steps: the front of each panel, the "
        "runs that no cheaper run beats. Log scale where a cost spans more than 20×."
    ) + (REPEATS_NOTE if data.repeats else "")
    fig = new_page(TITLE, caption)
    axes = fig.subplots(len(rows), len(costs), squeeze=False, sharey="row")
    for r, (label, ycol) in enumerate(rows):
        for c, (metric, xcol) in enumerate(costs):
            ax = axes[r, c]
            runs = data.runs[np.isfinite(data.runs[[xcol, ycol]].astype(float)).all(axis=1)]
            if len(runs):
                front = runs[pareto_front(runs, xcol, ycol)]
                xs, ys = front[xcol].to_numpy(float), front[ycol].to_numpy(float)
                step_front(ax, xs, ys, False, color=FRONT_COLOUR, lw=1.6, zorder=2)
                error_bars(ax, data, runs, xcol, ycol)
                scatter(ax, data, runs, xcol, ycol)
                values = runs[xcol].astype(float)
                if values.min() > 0 and values.max() > 20 * values.min():
                    ax.set_xscale("log")
                else:  # few short tick labels: parameter counts read 105k, not 105856
                    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
                    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel(metric_label(metric) + "  ←  cheaper")
            if c == 0:
                ax.set_ylabel(label)
            ax.margins(0.08)
    add_legend(
        fig, legend_handles(data, [Line2D([], [], color=FRONT_COLOUR, lw=1.6, label="front")])
    )
    return fig


PAGE = Page(
    "cost",
    TITLE,
    lambda data, table: [page_cost(data)] if has_cost(data.runs) else [],
    always=False,
)
