"""Page 4, hyperparameter effects: a row per loss family, its hyperparameters (from its
description, `tradeoff.losses.FAMILIES`) against both objectives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...losses import FAMILIES
from ..data import ReportData
from ..labels import metric_label
from ..layout import Page, add_note, new_page
from ..style import family_colour

__all__ = ["PAGE", "TITLE", "page_hyper"]

TITLE = "Hyperparameter effects"


def _is_grid(values: Sequence[float], max_values: int = 12, min_log_gap: float = 0.12) -> bool:
    """Whether `values` are few and spread enough (on a log axis) to be labelled one by one."""
    values = sorted(v for v in values if v > 0)
    gaps = np.diff(np.log10(values)) if len(values) > 1 else np.array([1.0])
    return len(values) <= max_values and float(gaps.min()) >= min_log_gap


# Axis names of the loss hyperparameters, from their families' descriptions.
_PARAM_LABELS = {h.param: h.label for f in FAMILIES.values() for h in f.hyperparameters}


def _param_label(param: str) -> str:
    return _PARAM_LABELS.get(param, param.removeprefix("loss."))


def _log_axis(values: pd.Series) -> bool:
    """Log scale for positive values spread over a decade or more."""
    values = values.astype(float)
    return bool((values > 0).all() and values.max() >= 10 * values.min())


def _family_runs(data: ReportData, family: str) -> tuple[pd.DataFrame, list[str]]:
    """The runs of `family` with numeric values for all of its hyperparameters, and those
    hyperparameters' columns (none when the family has none, or no run logged them)."""
    runs = data.runs[data.runs["loss_family"] == family]
    described = FAMILIES.get(family)
    columns = [f"params.{h.param}" for h in described.hyperparameters] if described else []
    if not columns or not all(c in runs for c in columns):
        return runs.iloc[0:0], []
    values = runs[columns].apply(pd.to_numeric, errors="coerce")
    return runs[np.isfinite(values.astype(float)).all(axis=1)], columns


def _line_panel(ax: Axes, data: ReportData, runs: pd.DataFrame, param: str, col: str) -> None:
    """One hyperparameter against a metric: each run a point, a line through the mean at
    each value."""
    family = str(runs["loss_family"].iloc[0])
    colour = family_colour(family)
    runs = runs[np.isfinite(runs[col].astype(float))]
    values = pd.to_numeric(runs[param])
    for experiment, group in runs.groupby("experiment", sort=False):
        ax.scatter(
            values[group.index],
            group[col],
            marker=data.marker(str(experiment)),
            color=colour,
            s=42,
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
        )
    mean = runs.assign(v=values).groupby("v")[col].mean().sort_index()
    if len(mean) > 1:
        ax.plot(mean.index, mean.to_numpy(), color=colour, lw=1.4, alpha=0.8, zorder=2)
    log = _log_axis(values)
    if log:
        ax.set_xscale("log")
    ticks = sorted(values.unique())
    if _is_grid(ticks) if log else len(ticks) <= 12:  # label the values that were run
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter("")
    name = _param_label(param.removeprefix("params."))
    ax.set_xlabel(name + (" (log scale)" if log else ""))
    ax.set_ylabel(metric_label(col, unit=True))
    ax.set_title(f"{family}: {name.split(' ')[0]} vs {metric_label(col)}")
    ax.margins(x=0.1, y=0.12)


def _grid_panel(
    fig: Figure, ax: Axes, data: ReportData, runs: pd.DataFrame, params: list[str], col: str
) -> None:
    """Two hyperparameters coloured by a metric: a heatmap when the runs form a small grid (a
    cell is the mean of the runs with that setting), else a scatter on their axes (a search)."""
    runs = runs[np.isfinite(runs[col].astype(float))]
    runs = runs.assign(h=pd.to_numeric(runs[params[0]]), v=pd.to_numeric(runs[params[1]]))
    grid = runs.groupby(["v", "h"])[col].agg(["mean", "size"]).reset_index()
    across, down = sorted(grid["h"].unique()), sorted(grid["v"].unique())
    filled = len(grid) / (len(across) * len(down))
    names = [_param_label(p.removeprefix("params.")) for p in params]
    family = str(runs["loss_family"].iloc[0])
    ax.set_title(f"{family}: {names[0]} × {names[1]}, colour = {metric_label(col)}")
    if _is_grid(across, 8, 0.0) and _is_grid(down, 8, 0.0) and filled >= 0.5:
        image = _heatmap(ax, grid, across, down)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    else:
        image = _grid_scatter(ax, data, runs, col)
        for scale, label, values, name in (
            (ax.set_xscale, ax.set_xlabel, runs["h"], names[0]),
            (ax.set_yscale, ax.set_ylabel, runs["v"], names[1]),
        ):
            log = _log_axis(values)
            if log:
                scale("log")
            label(name + (" (log scale)" if log else ""))
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label(metric_label(col, unit=True))
    lo, hi = image.norm.vmin, image.norm.vmax
    if hi - lo < 1e-12:
        bar.set_ticks([lo])


def _heatmap(ax: Axes, grid: pd.DataFrame, across: list[float], down: list[float]):
    """The grid's mean values as annotated cells (n when several runs share a setting)."""
    values = np.full((len(down), len(across)), np.nan)
    sizes = np.zeros_like(values)
    for _, row in grid.iterrows():
        i, j = down.index(row["v"]), across.index(row["h"])
        values[i, j], sizes[i, j] = row["mean"], row["size"]
    image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(across)), [f"{m:g}" for m in across])
    ax.set_yticks(range(len(down)), [f"{a:g}" for a in down])
    ax.grid(False)
    for i in range(len(down)):
        for j in range(len(across)):
            if np.isnan(values[i, j]):
                continue
            shade = image.cmap(image.norm(values[i, j]))
            dark = sum(c * w for c, w in zip(to_rgb(shade), (0.3, 0.59, 0.11), strict=True)) < 0.5
            text = f"{values[i, j]:.3f}" + (f"\n(n={int(sizes[i, j])})" if sizes[i, j] > 1 else "")
            ax.text(
                j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black"
            )
    return image


def _grid_scatter(ax: Axes, data: ReportData, runs: pd.DataFrame, col: str):
    """Runs that are not on a small grid: each a point on the two hyperparameters' axes,
    coloured by its value (labelled when there are few)."""
    values = runs[col].astype(float)
    norm = Normalize(float(values.min()), float(values.max()))
    for experiment, group in runs.groupby("experiment", sort=False):
        image = ax.scatter(
            group["h"],
            group["v"],
            c=group[col].astype(float),
            cmap="viridis",
            norm=norm,
            marker=data.marker(str(experiment)),
            s=70,
            edgecolors="0.25",
            linewidths=0.5,
            zorder=3,
        )
    if len(runs) <= 16:
        for _, row in runs.iterrows():
            ax.annotate(
                f"{float(row[col]):.3f}",
                (row["h"], row["v"]),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=8,
            )
    ax.margins(0.08)
    return image


def page_hyper(data: ReportData) -> Figure:
    """Each loss family's hyperparameters against both objectives, one row per family that
    has hyperparameters: a curve for one hyperparameter (τ), a grid for two (HKR's
    min_margin × α). A sweep of one family gets the whole page."""
    rows = []
    for family in data.families():
        runs, params = _family_runs(data, family)
        if params and not runs.empty:
            rows.append((family, runs, params))
    drawn = {family for family, _, _ in rows}
    none = [f for f in data.families() if f not in FAMILIES or not FAMILIES[f].hyperparameters]
    unlogged = [f for f in data.families() if f not in drawn and f not in none]
    parts = []
    if any(len(p) == 1 for _, _, p in rows):
        parts.append(
            "One hyperparameter: each run a point (marker = experiment), the line joins the mean "
            "at each value."
        )
    if any(len(p) == 2 for _, _, p in rows):
        parts.append(
            "Two hyperparameters: a cell's colour and number are the mean over the runs with that "
            "setting (n when more than one); runs that are not on a small grid (an Optuna "
            "search) are points on the two axes, coloured by their value."
        )
    if none:
        parts.append(f"Not drawn: {', '.join(none)} (a loss without hyperparameters).")
    if unlogged:
        parts.append(f"Not drawn: {', '.join(unlogged)} (hyperparameters not logged as numbers).")
    fig = new_page(TITLE, " ".join(parts))
    if not rows:
        add_note(fig.add_subplot(), "none of these runs has a loss hyperparameter to draw")
        return fig
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (_, runs, params), (left, right) in zip(rows, axes, strict=True):
        for ax, col in ((left, data.y_col), (right, data.x_col)):
            if len(params) == 1:
                _line_panel(ax, data, runs, params[0], col)
            else:
                _grid_panel(fig, ax, data, runs, params[:2], col)
    if len(data.experiments) > 1:
        fig.legend(
            handles=[
                Line2D([], [], ls="", marker=data.marker(e), ms=8, mfc="0.6", mec="0.3", label=e)
                for e in data.experiments
            ],
            loc="outside right upper",
            title="experiment",
            frameon=False,
        )
    return fig


PAGE = Page("hyper", TITLE, lambda data, table: [page_hyper(data)])
