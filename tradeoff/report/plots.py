"""The report's pages: one function per page, each returning a matplotlib Figure.

Pages are plain `matplotlib.figure.Figure`s (no pyplot state), A4 landscape, constrained layout.
Every page colours runs by loss family from one mapping, `FAMILY_COLOURS`, and marks the
experiment a run belongs to by its marker, so a run looks the same on every page.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from ..losses import FAMILIES
from .frame import (
    cra_columns,
    hyperparameters,
    hypervolume,
    maximised,
    pareto_front,
    radius_label,
    varying_params,
)

__all__ = [
    "EXPERIMENT_MARKERS",
    "FAMILY_COLOURS",
    "PAGE_TITLES",
    "RC",
    "ReportData",
    "family_colour",
    "family_shades",
    "metric_label",
    "render_pages",
]

# One colour per loss family, on every page: the one its description gives it.
FAMILY_COLOURS: dict[str, str] = {name: f.colour for name, f in FAMILIES.items()}
_SPARE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")
FRONT_COLOUR = "#222222"
EXPERIMENT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RUN_LINESTYLES = ("-", "--", "-.", ":")
PAGE_SIZE = (11.69, 8.27)  # A4 landscape, inches
MAX_LABELS = 12  # front points labelled on the front page
MAX_CURVES = 10  # front runs drawn on the curve pages
TABLE_ROWS = 20  # front runs per table page
SKIPPED_LINES = 6  # skipped runs listed by name on the summary page

PAGE_TITLES = (
    "Summary",
    "Pareto front",
    "Accuracy vs certified robust accuracy",
    "Hyperparameter effects",
    "Certified robust accuracy vs radius",
    "Learning curves",
    "Pareto front table",
)

# Font sizes are for a printed A4 page or a projected slide: nothing below 8 pt.
RC: dict[str, object] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 16,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embedded TrueType: text stays selectable and searchable
    "ps.fonttype": 42,
    "savefig.dpi": 150,
}

_METRIC_NAMES = {
    "accuracy": "accuracy",
    "mean_certificate": "mean certificate",
    "mean_certificate_correct": "mean certificate of correct samples",
    "lipschitz_bound": "Lipschitz bound",
    "loss": "loss",
    "seconds": "seconds (wall clock)",
    "peak_memory_mb": "peak memory (MiB)",
    "params": "parameters",
    "images_per_second": "images per second",
}


def family_colour(family: str) -> str:
    """The colour of a loss family; families not in FAMILY_COLOURS get a stable spare colour."""
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    return _SPARE_COLOURS[sum(map(ord, family)) % len(_SPARE_COLOURS)]


def family_shades(family: str, n: int) -> list[tuple[float, float, float]]:
    """`n` distinct shades of a family's colour, light to dark: one per run of the family where
    runs are drawn as separate lines, so that the hue still names the family."""
    base = np.array(to_rgb(family_colour(family)))
    if n == 1:
        return [tuple(base)]
    # From 40% white to 45% black: every shade stays visible on white and apart from the next.
    out = []
    for t in np.linspace(-1.0, 1.0, n):
        target = np.ones(3) if t < 0 else np.zeros(3)
        weight = abs(t) * (0.4 if t < 0 else 0.45)
        out.append(tuple(base * (1 - weight) + target * weight))
    return out


# What a certificate is, said on every axis that shows one.
CERTIFICATE_UNIT = "L2 radius, input pixel scale"


def metric_label(name: str, unit: bool = False) -> str:
    """A readable axis label: `test/cra_eps_0.5` → `test CRA at ε = 0.5`; with `unit`, a
    certificate metric says what it measures: `test mean certificate (L2 radius, input pixel
    scale)`."""
    base = name.removeprefix("metrics.")
    split, _, key = base.rpartition("/")
    if key.startswith("cra_eps_"):
        try:
            text = f"CRA at ε = {radius_label(float(key.removeprefix('cra_eps_')))}"
        except ValueError:
            text = key
    else:
        text = _METRIC_NAMES.get(key, key.replace("_", " "))
    if unit and "certificate" in key:
        text += f" ({CERTIFICATE_UNIT})"
    return f"{split} {text}".strip()


# -- the data the pages draw -------------------------------------------------------------------


@dataclass
class ReportData:
    """Everything the pages draw: the runs, the chosen objectives and what was fetched."""

    runs: pd.DataFrame  # FINISHED job runs with an `on_front` column
    experiments: list[str]
    x: str  # metric names, e.g. test/mean_certificate
    y: str
    x_col: str  # their columns in `runs`
    y_col: str
    reference: tuple[float, float]
    hypervolume: float
    tracking_uri: str = ""
    parent: str | None = None
    not_finished: dict[str, dict[str, int]] = field(default_factory=dict)
    # run id -> per-sample test certificates (label, prediction, correct, certificate) or None
    certificates: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    # run id -> metric -> DataFrame(step, value)
    histories: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    curve_metrics: tuple[str, str] = ("val/accuracy", "val/mean_certificate")
    table_name: str = "front.csv"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    # FINISHED runs tagged degenerate and left out of `runs` (reason in column `degenerate`)
    degenerate: pd.DataFrame = field(default_factory=pd.DataFrame)

    @functools.cached_property
    def varying(self) -> list[str]:
        """Params besides the loss's that differ between the runs: labels show them."""
        return varying_params(self.runs)

    @property
    def plotted(self) -> pd.DataFrame:
        """Runs that have both objectives: the points of the front page."""
        xy = self.runs[[self.x_col, self.y_col]].astype(float)
        return self.runs[np.isfinite(xy).all(axis=1)]

    @property
    def skipped(self) -> pd.DataFrame:
        """FINISHED runs missing an objective: listed on the summary page, not plotted."""
        return self.runs.drop(index=self.plotted.index)

    @property
    def front(self) -> pd.DataFrame:
        """The overall front, most accurate (smallest x) first."""
        front = self.runs[self.runs["on_front"]]
        return front.sort_values([self.x_col, self.y_col], ascending=[True, False], kind="stable")

    def marker(self, experiment: str) -> str:
        return EXPERIMENT_MARKERS[self.experiments.index(experiment) % len(EXPERIMENT_MARKERS)]

    def families(self) -> list[str]:
        """Loss families present, known ones in FAMILY_COLOURS order first."""
        present = set(self.runs["loss_family"].astype(str))
        known = [f for f in FAMILY_COLOURS if f in present]
        return known + sorted(present - set(known))


# -- page scaffolding --------------------------------------------------------------------------


def _page(title: str, caption: str | None = None) -> Figure:
    """An A4 landscape page with its title at the top and room for a caption at the bottom."""
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(rect=(0.01, 0.085, 0.98, 0.905), w_pad=0.08, h_pad=0.08)
    fig.suptitle(title, x=0.015, ha="left", fontweight="bold")
    if caption:
        _caption(fig, caption)
    return fig


def _caption(fig: Figure, text: str) -> None:
    """The page's explanation, in the band the layout leaves free at the bottom."""
    fig.text(0.015, 0.07, _wrap(text, 165), fontsize=9, va="top", color="0.25")


def _wrap_words(text: str, width: int) -> str:
    """Wrap at spaces only: headers such as `hyperparameters` stay whole."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(p, width) for p in text.split("\n"))


def _note(ax: Axes, text: str) -> None:
    """Replace an axes by a centred note saying why there is nothing to draw."""
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        _wrap(text, 60),
        ha="center",
        va="center",
        fontsize=12,
        color="0.35",
        transform=ax.transAxes,
        bbox={"boxstyle": "round,pad=0.8", "fc": "0.96", "ec": "0.8"},
    )


def _header(text: str) -> Line2D:
    """A legend entry with no symbol: a section heading, set bold by `_legend`."""
    handle = Line2D([], [], ls="", marker="", label=text)
    handle._tradeoff_header = True  # type: ignore[attr-defined]
    return handle


def _legend_handles(data: ReportData, extra: Sequence[Line2D] = ()) -> list[Line2D]:
    """Loss families (colours), experiments (markers, if several), then `extra` lines."""
    handles = [_header("loss family")] + [
        Line2D([], [], ls="", marker="o", ms=8, color=family_colour(f), label=f)
        for f in data.families()
    ]
    if len(data.experiments) > 1:
        handles += [_header("experiment")] + [
            Line2D([], [], ls="", marker=data.marker(e), ms=8, mfc="0.6", mec="0.3", label=e)
            for e in data.experiments
        ]
    if extra:
        handles += [_header("lines"), *extra]
    return handles


def _legend(fig: Figure, handles: list[Line2D], title: str | None = None) -> None:
    """One legend per page, outside the axes on the right; symbol-less entries are headings."""
    legend = fig.legend(
        handles=handles,
        loc="outside right upper",
        title=title,
        frameon=False,
        alignment="left",
        handletextpad=0.6,
    )
    for handle, text in zip(handles, legend.get_texts(), strict=True):
        if getattr(handle, "_tradeoff_header", False):
            text.set_fontweight("bold")
    if title:
        legend.get_title().set_fontweight("bold")


def _scatter(ax: Axes, data: ReportData, runs: pd.DataFrame, xcol: str, ycol: str) -> None:
    """Every run a point: colour = loss family, marker = experiment; front runs ringed."""
    for (family, experiment), group in runs.groupby(["loss_family", "experiment"], sort=False):
        ax.scatter(
            group[xcol],
            group[ycol],
            s=42,
            marker=data.marker(str(experiment)),
            color=family_colour(str(family)),
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
            alpha=0.9,
        )


def _step_front(
    ax: Axes, xs: np.ndarray, ys: np.ndarray, x_max: bool = True, **kwargs: object
) -> None:
    """The attainment line of a 2-D front, in steps from point to point along x; `x_max`:
    whether x is maximised (robustness) or minimised (cost), which sets the side of each step."""
    order = np.lexsort((-ys, xs))
    style = "steps-pre" if x_max else "steps-post"
    ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], drawstyle=style, **kwargs)


def _better(metric: str, more: str) -> str:
    """The axis hint of `metric`: `→  more <more>` when maximised, `←  less` when minimised."""
    return f"  →  more {more}" if maximised(metric) else "  ←  less (better)"


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _subset(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), the first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


# -- page 1: summary ---------------------------------------------------------------------------


def _run_line(row: pd.Series, data: ReportData) -> str:
    return (
        f"{row['run_name']}  (run {row['run_id']}, {row['experiment']}):  "
        f"{metric_label(data.y)} {_fmt(float(row[data.y_col]))}, "
        f"{metric_label(data.x)} {_fmt(float(row[data.x_col]))}"
    )


def _tightness(runs: pd.DataFrame) -> str:
    """The runs' `test/bound_tightness`: their Lipschitz bound over the largest slope measured."""
    column = "metrics.test/bound_tightness"
    values = runs[column].astype(float) if column in runs else pd.Series(dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "— (not logged by these runs)"
    return (
        f"median {values.median():.3g}x, range {values.min():.3g}–{values.max():.3g} over "
        f"{len(values)} runs: each run's Lipschitz bound over the largest slope measured at test "
        "samples (tradeoff.tightness). 1 is tight; certificates from the exact constant would be "
        "at most that factor larger."
    )


def _values(runs: pd.DataFrame, column: str) -> str:
    if column not in runs:
        return "—"
    values = runs[column].dropna().astype(str).unique().tolist()
    return ", ".join(sorted(values)) if values else "—"


def page_summary(data: ReportData) -> Figure:
    """Experiments, data, model, epochs, counts, best runs, hypervolume, dates, commits."""
    fig = _page(f"{PAGE_TITLES[0]}: {', '.join(data.experiments)}")
    ax = fig.add_subplot()
    ax.set_axis_off()
    runs, plotted, front = data.runs, data.plotted, data.front
    by_family = runs["loss_family"].value_counts()
    counts = ", ".join(f"{f} {by_family[f]}" for f in data.families() if f in by_family)
    per_experiment = ""
    if len(data.experiments) > 1:
        by_exp = runs["experiment"].value_counts()
        per_experiment = "; " + ", ".join(f"{e} {by_exp.get(e, 0)}" for e in data.experiments)
    not_finished = {}
    for statuses in data.not_finished.values():
        for status, n in statuses.items():
            not_finished[status] = not_finished.get(status, 0) + n
    left_out = ", ".join(f"{n} {s}" for s, n in sorted(not_finished.items()))
    degenerate = data.degenerate
    best_acc = plotted.loc[plotted[data.y_col].astype(float).idxmax()]
    x_values = plotted[data.x_col].astype(float)
    best_rob = plotted.loc[x_values.idxmax() if maximised(data.x) else x_values.idxmin()]
    front_fams = front["loss_family"].value_counts()
    hv_family = []
    for family in data.families():
        sub = plotted[plotted["loss_family"] == family]
        if len(sub):
            hv_family.append(
                f"{family} {hypervolume(sub, data.x_col, data.y_col, data.reference):.4f}"
            )
    ref = f"({data.reference[0]:g}, {data.reference[1]:g})"
    starts = runs["start_time"].dropna()
    span = (
        f"{starts.min():%Y-%m-%d %H:%M} to {starts.max():%Y-%m-%d %H:%M} UTC"
        if len(starts)
        else "—"
    )
    commits = runs.get("tags.git_commit", pd.Series(dtype=str)).dropna().astype(str)
    commit_text = (
        ", ".join(f"{c[:12]} ({n} runs)" for c, n in commits.value_counts().items()) or "unknown"
    )
    experiments = ", ".join(data.experiments)
    if data.parent:
        experiments += f"   (children of sweep run {data.parent} only)"
    rows: list[tuple[str, str]] = [
        ("Experiments", experiments),
        ("Tracking store", data.tracking_uri),
        ("Dataset", _values(runs, "params.data.name")),
        ("Model", _values(runs, "params.model.name")),
        ("Epochs", _values(runs, "params.train.epochs")),
        (
            "Runs",
            f"{len(runs)} FINISHED job runs ({counts}{per_experiment})"
            + (f"; not counted: {left_out}" if left_out else "")
            + (f"; {len(data.skipped)} skipped (listed below)" if len(data.skipped) else "")
            + (
                f"; {len(degenerate)} degenerate, left out (listed below)"
                if len(degenerate)
                else ""
            ),
        ),
        (
            "Objectives",
            f"x = {data.x} ({'max' if maximised(data.x) else 'min'}imised), "
            f"y = {data.y} ({'max' if maximised(data.y) else 'min'}imised)",
        ),
        (
            "Pareto front",
            f"{len(front)} of {len(plotted)} runs ("
            + ", ".join(f"{f} {front_fams[f]}" for f in data.families() if f in front_fams)
            + ")",
        ),
        ("Most accurate run", _run_line(best_acc, data)),
        (
            "Most robust run" if maximised(data.x) else f"Least {metric_label(data.x)}",
            _run_line(best_rob, data),
        ),
        (
            "Hypervolume",
            f"{data.hypervolume:.4f}: the area of the ({data.x}, {data.y}) plane that the runs "
            f"dominate, measured from the reference point {ref}, the worst corner (zero "
            "certificate, zero accuracy). Higher is better; comparable only between reports "
            "with the same metrics and reference point.",
        ),
        *([("Per family", "hypervolume " + ", ".join(hv_family))] if len(hv_family) > 1 else []),
        ("Bound tightness", _tightness(runs)),
        ("Runs started", span),
        ("Report written", f"{data.created:%Y-%m-%d %H:%M} UTC"),
        ("Git commit", f"{commit_text}, from the runs' git_commit tag"),
    ]
    skipped = data.skipped
    if len(skipped):
        lines = []
        for _, row in skipped.head(SKIPPED_LINES).iterrows():
            missing = [
                m
                for m, c in ((data.x, data.x_col), (data.y, data.y_col))
                if not np.isfinite(float(row[c]))
            ]
            lines.append(f"{row['run_id']}  {row['run_name']}: no finite {', '.join(missing)}")
        if len(skipped) > SKIPPED_LINES:
            lines.append(f"… and {len(skipped) - SKIPPED_LINES} more")
        rows.append(("Skipped runs", "\n".join(lines)))
    if len(degenerate):
        lines = [
            f"{row['run_id']}  {row['run_name']}: {row['degenerate']}"
            for _, row in degenerate.head(SKIPPED_LINES).iterrows()
        ]
        if len(degenerate) > SKIPPED_LINES:
            lines.append(f"… and {len(degenerate) - SKIPPED_LINES} more")
        lines.append("(robust by doing nothing: tradeoff-report --include-degenerate draws them)")
        rows.append(("Degenerate runs", "\n".join(lines)))
    _key_values(ax, rows)
    return fig


def _key_values(ax: Axes, rows: list[tuple[str, str]], size: float = 10.5) -> None:
    """Rows of `key  value` down the axes, values wrapped, spaced by their real line count."""
    line = size * 1.45  # points
    offset = 0.0
    for key, value in rows:
        text = _wrap(value, 112)  # 125 ran past the page's edge on a line without spaces to spare
        for x, content, weight in ((0.0, key, "bold"), (0.2, text, "normal")):
            ax.annotate(
                content,
                (x, 1.0),
                xycoords="axes fraction",
                xytext=(0, -offset),
                textcoords="offset points",
                va="top",
                fontsize=size,
                fontweight=weight,
                linespacing=1.35,
            )
        offset += line * (text.count("\n") + 1) + 0.55 * size


# -- page 2: the front -------------------------------------------------------------------------


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
    """Every run a point coloured by loss family, each family's front, the overall front,
    the overall front's points labelled with their hyperparameters."""
    plotted, front = data.plotted, data.front
    labelled = _subset(len(front), MAX_LABELS)
    ref = f"({data.reference[0]:g}, {data.reference[1]:g})"
    several = len(data.families()) > 1  # with one family, its front is the overall front
    steps = "thick black steps and ringed points: "
    if several:
        steps = "Thin dashed steps: the front of each loss family; " + steps
    caption = (
        f"Every FINISHED run with both metrics is a point ({len(plotted)} runs; colour = loss "
        "family" + (", marker = experiment" if len(data.experiments) > 1 else "") + "). "
        f"{steps[0].upper()}{steps[1:]}the overall front ({len(front)} runs), labelled with "
        f"their hyperparameters. Hypervolume of the overall front {data.hypervolume:.4f} "
        f"(reference point {ref})."
    )
    if len(labelled) < len(front):
        caption += (
            f" Labels on {len(labelled)} of the {len(front)} front runs, spread along the front;"
            " all of them are in the table."
        )
    fig = _page(f"{PAGE_TITLES[1]}: {metric_label(data.y)} vs {metric_label(data.x)}", caption)
    ax = fig.add_subplot()
    for family in data.families() if several else ():
        sub = plotted[plotted["loss_family"] == family]
        if len(sub) < 2:
            continue
        fam_front = sub[pareto_front(sub, data.x_col, data.y_col)]
        _step_front(
            ax,
            fam_front[data.x_col].to_numpy(float),
            fam_front[data.y_col].to_numpy(float),
            maximised(data.x),
            color=family_colour(family),
            lw=1.2,
            ls="--",
            alpha=0.8,
            zorder=2,
        )
    fx, fy = front[data.x_col].to_numpy(float), front[data.y_col].to_numpy(float)
    _step_front(ax, fx, fy, maximised(data.x), color=FRONT_COLOUR, lw=2.2, zorder=2.5)
    _scatter(ax, data, plotted, data.x_col, data.y_col)
    ax.scatter(fx, fy, s=110, facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.2, zorder=4)
    ax.set_xlabel(metric_label(data.x, unit=True) + _better(data.x, "robust"))
    ax.set_ylabel(metric_label(data.y, unit=True) + _better(data.y, "accurate"))
    ax.margins(x=0.12, y=0.1)
    lines = [
        Line2D(
            [], [], color=FRONT_COLOUR, lw=2.2, marker="o", mfc="none", ms=9, label="overall front"
        )
    ]
    if several:
        lines.insert(0, Line2D([], [], color="0.4", lw=1.2, ls="--", label="front of a family"))
    handles = _legend_handles(data, lines)
    _legend(fig, handles)
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
        fig.text(0.985, 0.07, caption_note, ha="right", va="top", fontsize=9, color="0.25")
    return fig


# -- page 3: accuracy vs CRA -------------------------------------------------------------------


def page_cra(data: ReportData) -> Figure:
    """The y objective against certified robust accuracy, one panel per configured radius."""
    radii = cra_columns(data.runs)
    caption = (
        "Certified robust accuracy (CRA) at radius ε: the fraction of test samples classified "
        "correctly with a certificate larger than ε (an L2 radius in the input's pixel scale). "
        "One panel per configured radius; black steps: the front in that panel's plane."
    )
    fig = _page(PAGE_TITLES[2], caption)
    if not radii:
        _note(
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
            _step_front(
                ax,
                front[col].to_numpy(float),
                front[data.y_col].to_numpy(float),
                color=FRONT_COLOUR,
                lw=1.6,
                zorder=2,
            )
            _scatter(ax, data, runs, col, data.y_col)
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
    _legend(fig, _legend_handles(data, [Line2D([], [], color=FRONT_COLOUR, lw=1.6, label="front")]))
    return fig


# -- page 4: hyperparameter effects ------------------------------------------------------------


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
    fig = _page(PAGE_TITLES[3], " ".join(parts))
    if not rows:
        _note(fig.add_subplot(), "none of these runs has a loss hyperparameter to draw")
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


# -- pages 5 and 6: curves of the front runs ---------------------------------------------------


def _curve_runs(data: ReportData) -> tuple[pd.DataFrame, str]:
    front = data.front
    keep = _subset(len(front), MAX_CURVES)
    note = ""
    if len(keep) < len(front):
        note = f" Showing {len(keep)} of the {len(front)} front runs, spread along the front."
    return front.iloc[keep], note


def _run_handle(style: dict[str, object], label: str, lw: float, ms: float) -> Line2D:
    """Legend entry of one front run drawn in `style` (see `_styles`)."""
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


def _styles(runs: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per run: a shade of its family's colour of its own (light to dark in the order of
    `runs`, along the front: more accurate to more robust), and within its family a line
    style and a marker of its own."""
    shades = {
        family: family_shades(str(family), int(n))
        for family, n in runs["loss_family"].value_counts().items()
    }
    seen: dict[str, int] = {}
    out = {}
    for _, row in runs.iterrows():
        k = seen.get(row["loss_family"], 0)
        seen[row["loss_family"]] = k + 1
        out[row["run_id"]] = {
            "color": shades[row["loss_family"]][k],
            "ls": RUN_LINESTYLES[k % len(RUN_LINESTYLES)],
            "marker": EXPERIMENT_MARKERS[k % len(EXPERIMENT_MARKERS)],
        }
    return out


def _run_legend(
    data: ReportData, runs: pd.DataFrame, styles: dict, lw: float, ms: float
) -> list[Line2D]:
    """Legend entries of the front runs drawn, under a heading per loss family."""
    handles: list[Line2D] = []
    for family in data.families():
        mine = runs[runs["loss_family"] == family]
        if mine.empty:
            continue
        handles.append(_header(family))
        for _, row in mine.iterrows():
            label = hyperparameters(row, greek=True, extra=data.varying)
            if len(data.experiments) > 1:
                label += f" [{row['experiment']}]"
            label += f" · {str(row['run_id'])[:8]}"
            handles.append(_run_handle(styles[row["run_id"]], label, lw=lw, ms=ms))
    return handles


def _reached(certificates: pd.DataFrame) -> np.ndarray:
    """Finite certificates of the correctly classified samples."""
    radius = certificates["certificate"].to_numpy(float)
    return radius[certificates["correct"].to_numpy(bool) & np.isfinite(radius)]


def page_radius(data: ReportData) -> Figure:
    """CRA as a function of the radius for the front runs, from the per-sample certificates."""
    runs, note = _curve_runs(data)
    missing = [r for r in runs["run_id"] if data.certificates.get(r) is None]
    radii = cra_columns(data.runs)
    # CRA is 0 beyond the largest finite certificate of a correct sample: draw up to there.
    reach = [
        float(np.max(_reached(c), initial=0.0))
        for r in runs["run_id"]
        if (c := data.certificates.get(r)) is not None
    ]
    top = max(max(reach, default=0.0) * 1.08, radii[0][0] * 1.15 if radii else 0.0, 1e-3)
    caption = (
        "CRA(ε) = fraction of test samples classified correctly with certificate > ε, "
        "computed from each front run's per-sample certificates (artifact "
        "certificates/test.parquet). Dots: the CRA the run logged at its configured radii "
        "(dotted lines). Each run has a shade of its family's colour of its own, light (most "
        "accurate) to dark (most robust)." + note
    )
    beyond = [radius_label(e) for e, _ in radii if e > top]
    if beyond and reach:
        caption += (
            f" Every front run has CRA 0 beyond ε = {max(reach):.3g}, so the radii "
            f"{', '.join(beyond)} are off the plot (their CRA is in the table)."
        )
    if missing and len(missing) < len(runs):
        caption += f" No certificate artifact for {', '.join(m[:8] for m in missing)}."
    fig = _page(PAGE_TITLES[4], caption)
    ax = fig.add_subplot()
    if len(missing) == len(runs):
        _note(
            ax,
            "no per-sample certificate artifact (certificates/test.parquet) for the "
            "runs on the front",
        )
        return fig
    grid = np.linspace(0.0, top, 400)
    styles = _styles(runs)
    for _, row in runs.iterrows():
        certs = data.certificates.get(row["run_id"])
        if certs is None:
            continue
        style = styles[row["run_id"]]
        radius = certs["certificate"].to_numpy(float)
        correct = certs["correct"].to_numpy(bool)
        cra = ((radius[None, :] > grid[:, None]) & correct[None, :]).mean(axis=1)
        ax.plot(grid, cra, color=style["color"], ls=style["ls"], lw=1.8)
        logged = [(e, float(row[c])) for e, c in radii if np.isfinite(float(row.get(c, np.nan)))]
        if logged:
            ax.plot(
                *zip(*logged, strict=True),
                ls="",
                marker=style["marker"],
                ms=6,
                color=style["color"],
                mec="white",
                mew=0.6,
            )
    for eps, _ in radii:
        if eps > top:
            continue
        ax.axvline(eps, color="0.55", ls=":", lw=1, zorder=0)
        ax.text(
            eps,
            0.985,
            f" ε = {radius_label(eps)}",
            rotation=90,
            ha="right",
            va="top",
            fontsize=8.5,
            color="0.3",
            transform=ax.get_xaxis_transform(),
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("radius ε (L2 distance, input pixel scale)")
    ax.set_ylabel("test certified robust accuracy")
    shown = runs[[data.certificates.get(r) is not None for r in runs["run_id"]]]
    _legend(fig, _run_legend(data, shown, styles, lw=1.8, ms=6), title="front run · run id")
    return fig


def page_curves(data: ReportData) -> Figure:
    """Validation accuracy and certificate per epoch for the front runs (one panel per metric
    that some front run logged)."""
    runs, note = _curve_runs(data)
    logged = [
        metric
        for metric in data.curve_metrics
        if any(
            not data.histories.get(r, {}).get(metric, pd.DataFrame()).empty for r in runs["run_id"]
        )
    ]
    missing = [m for m in data.curve_metrics if m not in logged]
    caption = (
        f"Per-epoch validation metrics of the front runs ({', '.join(data.curve_metrics)}), as "
        "logged during training; each run has a shade of its family's colour of its own, light "
        "(most accurate) to dark (most robust), and its own line style within its family."
        + (f" No front run logged {', '.join(missing)}." if missing and logged else "")
        + note
    )
    fig = _page(PAGE_TITLES[5], caption)
    if not logged:
        _note(fig.add_subplot(), f"no {' or '.join(missing)} history logged by the front runs")
        return fig
    axes = np.atleast_1d(fig.subplots(1, len(logged)))
    styles = _styles(runs)
    for ax, metric in zip(axes, logged, strict=True):
        for _, row in runs.iterrows():
            style = styles[row["run_id"]]
            points = data.histories.get(row["run_id"], {}).get(metric)
            if points is None or points.empty:
                continue
            ax.plot(
                points["step"],
                points["value"],
                color=style["color"],
                ls=style["ls"],
                marker=style["marker"],
                ms=7,
                lw=1.6,
                mec="white",
                mew=0.6,
            )
        ax.set_title(metric_label(metric))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label(metric, unit=True))
        epochs = [
            int(h[metric]["step"].max())
            for h in data.histories.values()
            if metric in h and not h[metric].empty
        ]
        last = max(epochs, default=1)
        if last <= 20:  # a tick per epoch
            ax.set_xticks(range(1 if last > 0 else 0, last + 1))
        ax.set_xlim(0.5 if last > 0 else -0.5, last + 0.5)
        ax.margins(y=0.1)
    _legend(fig, _run_legend(data, runs, styles, lw=1.6, ms=5), title="front run · run id")
    return fig


# -- page 7: the table -------------------------------------------------------------------------


def table_pages(data: ReportData, table: pd.DataFrame) -> list[Figure]:
    """The front table (`frame.front_table`), TABLE_ROWS rows a page."""
    cra = [c for c in table.columns if "/cra_eps_" in c]
    show_exp = len(data.experiments) > 1
    header = (
        ["run id"]
        + (["experiment"] if show_exp else [])
        + [
            "loss",
            "hyperparameters",
            metric_label(data.y),
            metric_label(data.x),
        ]
        + [f"CRA {radius_label(float(c.rsplit('_', 1)[1]))}" for c in cra]
    )
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [r["run_id"]]
            + ([r["experiment"]] if show_exp else [])
            + [r["loss_family"], r["hyperparameters"] or "—", _fmt(r[data.y]), _fmt(r[data.x])]
            + [_fmt(r[c]) for c in cra]
        )
    pages = []
    chunks = [rows[i : i + TABLE_ROWS] for i in range(0, len(rows), TABLE_ROWS)] or [[]]
    for n, chunk in enumerate(chunks):
        title = PAGE_TITLES[6] + (f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else "")
        caption = (
            f"The {len(table)} runs on the overall front, most accurate first. Objectives: "
            f"{data.y} and {data.x}; CRA = test certified robust accuracy at radius ε. "
            "Certificates and ε are L2 radii in the input's pixel scale. "
            f"The same table is beside the PDF as {data.table_name}."
        )
        fig = _page(title, caption)
        ax = fig.add_subplot()
        ax.set_axis_off()
        _draw_table(ax, header, chunk, families=[row[2 if show_exp else 1] for row in chunk])
        pages.append(fig)
    return pages


def _draw_table(ax: Axes, header: list[str], rows: list[list[str]], families: list[str]) -> None:
    """A plain table filling the axes' width: columns as wide as their widest text."""
    if not rows:
        _note(ax, "no runs on the front")
        return
    fig = ax.get_figure()
    fig.canvas.draw()  # settle the layout so the axes' width is known
    renderer = fig.canvas.get_renderer()
    axes_px = ax.get_window_extent(renderer).width
    header = [_wrap_words(h, 14) for h in header]

    def width(text: str, prop: FontProperties) -> float:
        return max(
            renderer.get_text_width_height_descent(t, prop, ismath=False)[0]
            for t in str(text).split("\n")
        )

    for size in (9.0, 8.5, 8.0, 7.5, 7.0):  # the largest font at which every text fits
        plain = FontProperties(size=size)
        bold = FontProperties(size=size, weight="bold")
        mono = FontProperties(family="monospace", size=size - 0.5)
        needed = (
            np.array(
                [
                    max([width(h, bold)] + [width(r[j], mono if j == 0 else plain) for r in rows])
                    for j, h in enumerate(header)
                ]
            )
            + 12 * fig.dpi / 72
        )  # cell padding
        widths = needed / axes_px
        if widths.sum() <= 1:
            break
    widths /= max(1.0, widths.sum())
    row_h = (size * 2.0) / 72 * fig.dpi / ax.get_window_extent(renderer).height
    head_h = row_h * max(h.count("\n") + 1 for h in header) * 0.8
    total = row_h * len(rows) + head_h
    table = ax.table(
        cellText=rows,
        colLabels=header,
        colWidths=list(widths),
        cellLoc="left",
        bbox=[0, 1 - total, float(widths.sum()), total],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(size)
    loss_col = header.index("loss")
    for (i, j), cell in table.get_celld().items():
        cell.set_edgecolor("0.85")
        cell.PAD = 6 / 72 * fig.dpi / axes_px / widths[j]
        text = cell.get_text()
        numeric = j > loss_col + 1
        if numeric:
            cell._loc = "right"
            text.set_horizontalalignment("right")
        if i == 0:
            cell.set_facecolor("0.92")
            cell.set_height(head_h)
            text.set_fontweight("bold")
            continue
        cell.set_height(row_h)
        if i % 2 == 0:
            cell.set_facecolor("0.975")
        if j == 0:
            text.set_fontproperties(mono)
        if j == loss_col:
            text.set_color(family_colour(families[i - 1]))
            text.set_fontweight("bold")


# -- all pages ---------------------------------------------------------------------------------


def render_pages(data: ReportData, table: pd.DataFrame) -> list[Figure]:
    """The report's figures in page order, each with a footer naming the page."""
    figures = [
        page_summary(data),
        page_front(data),
        page_cra(data),
        page_hyper(data),
        page_radius(data),
        page_curves(data),
        *table_pages(data, table),
    ]
    from .cost import has_cost, page_cost  # it draws with this module's helpers

    if has_cost(data.runs):
        figures.append(page_cost(data))
    name = ", ".join(data.experiments)
    for i, fig in enumerate(figures, start=1):
        fig.text(
            0.985,
            0.012,
            f"tradeoff-report · {name} · page {i} of {len(figures)}",
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.45",
        )
    return figures
