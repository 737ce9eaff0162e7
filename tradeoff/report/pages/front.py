"""Page 2, the front: every run a point, each family's front and the overall front, labelled."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from ..data import GROUP, ReportData, subset
from ..draw import REPEATS_NOTE, error_bars, scatter, step_front
from ..frame import hyperparameters, maximised, pareto_front
from ..labels import axis_hint, metric_label
from ..layout import Page, add_legend, legend_handles, new_page
from ..style import FRONT_COLOUR

__all__ = ["MAX_LABELS", "PAGE", "TITLE", "page_front"]

TITLE = "Pareto front"

MAX_LABELS = 12  # front points labelled on the front page

_DIRECTIONS = ((1, 1), (1, 0), (0, 1), (1, -1), (-1, 1), (-1, 0), (0, -1), (-1, -1))


def _place_labels(
    fig: Figure, ax: Axes, points: np.ndarray, labels: list[str], obstacles: np.ndarray
) -> int:
    """Label `points` with `labels`, each at the first nearby offset whose text box stays in
    the axes and overlaps no marker and no earlier label; returns how many found no place.

    The layout is computed first and then frozen, so that the boxes measured here are the
    ones that get drawn.
    """
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    axbox = ax.get_window_extent(renderer)
    r = 5.5 * px
    centres = ax.transData.transform(obstacles)
    taken = [Bbox.from_extents(u - r, v - r, u + r, v + r) for u, v in centres]
    missed = 0
    for (x, y), label in zip(points, labels, strict=True):
        placed = False
        for dist in (7, 16, 28, 42):
            for ux, uy in _DIRECTIONS:
                scale = dist * (0.75 if ux and uy else 1.0)
                ann = ax.annotate(
                    label,
                    (x, y),
                    xytext=(ux * scale, uy * scale),
                    textcoords="offset points",
                    ha={1: "left", 0: "center", -1: "right"}[ux],
                    va={1: "bottom", 0: "center", -1: "top"}[uy],
                    fontsize=8.5,
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                    arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkB": 4}
                    if dist > 7
                    else None,
                )
                ann.set_in_layout(False)
                ann.update_positions(renderer)
                box = Text.get_window_extent(ann, renderer).padded(2 * px)
                inside = (
                    box.x0 >= axbox.x0
                    and box.x1 <= axbox.x1
                    and box.y0 >= axbox.y0
                    and box.y1 <= axbox.y1
                )
                if inside and not any(box.overlaps(t) for t in taken):
                    taken.append(box)
                    placed = True
                    break
                ann.remove()
            if placed:
                break
        missed += not placed
    return missed


def _point_label(row: pd.Series, extra: Sequence[str] = ()) -> str:
    """A front point's label: its hyperparameters and the params in `extra` (the colour gives
    the family)."""
    text = hyperparameters(row, greek=True, extra=extra)
    return str(row["loss_family"]) if text in ("", "—") else text


def page_front(data: ReportData) -> Figure:
    """Every run a point coloured by its group (loss family, or `--by`), each group's front,
    the overall front, the overall front's points labelled with their hyperparameters."""
    plotted, front = data.plotted, data.front
    labelled = subset(len(front), MAX_LABELS)
    ref = f"({data.reference[0]:g}, {data.reference[1]:g})"
    several = len(data.groups()) > 1  # with one group, its front is the overall front
    steps = "thick black steps and ringed points: "
    if several:
        steps = f"Thin dashed steps: the front of each {data.group_title}; " + steps
    points = f"{len(plotted)} runs"
    if data.repeats:
        points = f"{len(plotted)} configs of {data.run_count} runs"
    caption = (
        f"Every FINISHED run with both metrics is a point ({points}; colour = "
        f"{data.group_title}"
        + (", marker = experiment" if len(data.experiments) > 1 else "")
        + "). "
        f"{steps[0].upper()}{steps[1:]}the overall front ({len(front)} runs), labelled with "
        f"their hyperparameters. Hypervolume of the overall front {data.hypervolume:.4f} "
        f"(reference point {ref})."
    )
    if data.repeats:
        caption += REPEATS_NOTE
    if len(labelled) < len(front):
        caption += (
            f" Labels on {len(labelled)} of the {len(front)} front runs, spread along the front;"
            " all of them are in the table."
        )
    fig = new_page(f"{TITLE}: {metric_label(data.y)} vs {metric_label(data.x)}", caption)
    ax = fig.add_subplot()
    for family in data.groups() if several else ():
        sub = plotted[plotted[GROUP] == family]
        if len(sub) < 2:
            continue
        fam_front = sub[pareto_front(sub, data.x_col, data.y_col)]
        step_front(
            ax,
            fam_front[data.x_col].to_numpy(float),
            fam_front[data.y_col].to_numpy(float),
            maximised(data.x),
            color=data.colour(family),
            lw=1.2,
            ls="--",
            alpha=0.8,
            zorder=2,
        )
    fx, fy = front[data.x_col].to_numpy(float), front[data.y_col].to_numpy(float)
    step_front(ax, fx, fy, maximised(data.x), color=FRONT_COLOUR, lw=2.2, zorder=2.5)
    error_bars(ax, data, plotted, data.x_col, data.y_col)
    scatter(ax, data, plotted, data.x_col, data.y_col)
    ax.scatter(fx, fy, s=110, facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.2, zorder=4)
    ax.set_xlabel(metric_label(data.x, unit=True) + axis_hint(data.x, "robust"))
    ax.set_ylabel(metric_label(data.y, unit=True) + axis_hint(data.y, "accurate"))
    ax.margins(x=0.12, y=0.1)
    lines = [
        Line2D(
            [], [], color=FRONT_COLOUR, lw=2.2, marker="o", mfc="none", ms=9, label="overall front"
        )
    ]
    if several:
        lines.insert(
            0,
            Line2D([], [], color="0.4", lw=1.2, ls="--", label=f"front of a {data.by or 'family'}"),
        )
    handles = legend_handles(data, lines)
    add_legend(fig, handles)
    texts = [_point_label(front.iloc[i], data.varying) for i in labelled]
    missed = _place_labels(
        fig,
        ax,
        np.column_stack([fx, fy])[labelled],
        texts,
        plotted[[data.x_col, data.y_col]].to_numpy(float),
    )
    if missed:
        caption_note = f"{missed} label(s) left out where they would overlap."
        ax.text(
            1.0,
            1.01,
            caption_note,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            color="0.25",
        )
    return fig


PAGE = Page("front", TITLE, lambda data, table: [page_front(data)])
