"""Page 3: the accuracy objective against certified robust accuracy at each radius."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..data import ReportData
from ..draw import REPEATS_NOTE, error_bars, scatter, step_front
from ..frame import cra_columns, pareto_front, radius_label
from ..labels import metric_label
from ..layout import Page, add_legend, add_note, legend_handles, new_page
from ..style import FRONT_COLOUR

__all__ = ["PAGE", "TITLE", "page_cra"]

TITLE = "Accuracy vs certified robust accuracy"


def page_cra(data: ReportData) -> Figure:
    """The y objective against certified robust accuracy, one panel per configured radius."""
    radii = cra_columns(data.runs)
    caption = (
        "Certified robust accuracy (CRA) at radius ε: the fraction of test samples classified "
        "correctly with a certificate larger than ε (an L2 radius in the input's pixel scale). "
        "One panel per configured radius; black steps: the front in that panel's plane."
    ) + (REPEATS_NOTE if data.repeats else "")
    fig = new_page(TITLE, caption)
    if not radii:
        add_note(
            fig.add_subplot(), "no certified robust accuracy metrics (test/cra_eps_*) in these runs"
        )
        return fig
    ncols = min(3, len(radii))
    nrows = math.ceil(len(radii) / ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, (eps, col) in zip(axes, radii, strict=False):
        runs = data.runs[np.isfinite(data.runs[[col, data.y_col]].astype(float)).all(axis=1)]
        if len(runs):
            front = runs[pareto_front(runs, col, data.y_col)]
            step_front(
                ax,
                front[col].to_numpy(float),
                front[data.y_col].to_numpy(float),
                color=FRONT_COLOUR,
                lw=1.6,
                zorder=2,
            )
            error_bars(ax, data, runs, col, data.y_col)
            scatter(ax, data, runs, col, data.y_col)
        label = radius_label(eps)
        ax.set_title(f"ε = {label}" + (f" ≈ {eps:.3f}" if "/" in label else ""))
        ax.set_xlabel("test CRA")
        ax.margins(0.08)
        hi = float(runs[col].max()) if len(runs) else 0.0
        ax.set_xlim(-0.04 * max(hi, 0.05), max(hi, 0.05) * 1.06)
    for ax in axes[: len(radii) : ncols]:
        ax.set_ylabel(metric_label(data.y))
    for ax in axes[len(radii) :]:
        ax.set_axis_off()
    add_legend(
        fig, legend_handles(data, [Line2D([], [], color=FRONT_COLOUR, lw=1.6, label="front")])
    )
    return fig


PAGE = Page("cra", TITLE, lambda data, table: [page_cra(data)])
