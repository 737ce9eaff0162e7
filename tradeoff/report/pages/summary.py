"""Page 1, the summary: what was drawn, the best runs, the hypervolume, what was left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data import GROUP, ReportData
from ..frame import hypervolume, maximised
from ..labels import metric_label, number, wrap
from ..layout import Page, new_page

__all__ = ["PAGE", "SKIPPED_LINES", "TITLE", "page_summary"]

TITLE = "Summary"

SKIPPED_LINES = 6  # skipped runs listed by name on the summary page


def _run_line(row: pd.Series, data: ReportData) -> str:
    seeds = int(row.get("seeds", 1))
    run = f"run {row['run_id']}" if seeds == 1 else f"mean of {seeds} seeds, first {row['run_id']}"
    return (
        f"{row['run_name']}  ({run}, {row['experiment']}):  "
        f"{metric_label(data.y)} {number(float(row[data.y_col]))}, "
        f"{metric_label(data.x)} {number(float(row[data.x_col]))}"
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
    fig = new_page(f"{TITLE}: {', '.join(data.experiments)}")
    ax = fig.add_subplot()
    ax.set_axis_off()
    runs, plotted, front = data.runs, data.plotted, data.front
    seeds = runs["seeds"] if "seeds" in runs else pd.Series(1, index=runs.index)
    by_family = seeds.groupby(runs[GROUP]).sum()
    counts = ", ".join(f"{f} {by_family[f]}" for f in data.groups() if f in by_family)
    per_experiment = ""
    if len(data.experiments) > 1:
        by_exp = seeds.groupby(runs["experiment"]).sum()
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
    front_fams = front[GROUP].value_counts()
    hv_family = []
    for family in data.groups():
        sub = plotted[plotted[GROUP] == family]
        if len(sub):
            hv_family.append(
                f"{family} {hypervolume(sub, data.x_col, data.y_col, data.reference):.4f}"
            )
    ref = f"({data.reference[0]:g}, {data.reference[1]:g})"
    unit = "configs" if data.repeats else "runs"
    repeated = seeds[seeds > 1]
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
            f"{data.run_count} FINISHED job runs ({counts}{per_experiment})"
            + (
                f"; {len(repeated)} configs run with several seeds ({int(repeated.sum())} runs), "
                f"each drawn as one point, the mean of its seeds, with error bars of one "
                f"standard deviation: {len(runs)} configs"
                if data.repeats
                else ""
            )
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
            f"y = {data.y} ({'max' if maximised(data.y) else 'min'}imised)"
            + "".join(f", z = {z} ({'max' if maximised(z) else 'min'}imised)" for z in data.z),
        ),
        (
            "Pareto front",
            f"{len(front)} of {len(plotted)} {unit} ("
            + ", ".join(f"{f} {front_fams[f]}" for f in data.groups() if f in front_fams)
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
        *([_per_group(data)] if data.by else []),
        *(
            [("Per family", "hypervolume " + ", ".join(hv_family))]
            if len(hv_family) > 1 and not data.by
            else []
        ),
        *([_all_objectives(data)] if data.z else []),
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


def _per_group(data: ReportData) -> tuple[str, str]:
    """One line per `--by` group: its best of each objective, its front's hypervolume and, where
    logged, its median training speed and peak memory (what an equal budget cannot show)."""
    plotted = data.plotted
    lines = []
    for group in data.groups():
        sub = plotted[plotted[GROUP] == group]
        if sub.empty:
            continue
        x = sub[data.x_col].astype(float)
        best_x = x.max() if maximised(data.x) else x.min()
        line = (
            f"{group}: best {metric_label(data.y)} {sub[data.y_col].astype(float).max():.4g}, "
            f"best {metric_label(data.x)} {best_x:.4g}, hypervolume "
            f"{hypervolume(sub, data.x_col, data.y_col, data.reference):.4f} ({len(sub)} runs)"
        )
        for metric, unit in (
            ("train/images_per_second", "images/s"),
            ("train/peak_memory_mb", "MiB peak"),
        ):
            column = f"metrics.{metric}"
            if column in sub and sub[column].notna().any():
                line += f", {sub[column].astype(float).median():.4g} {unit}"
        lines.append(line)
    return f"Per {data.by}", "\n".join(lines)


def _all_objectives(data: ReportData) -> tuple[str, str]:
    """The summary's row for the hypervolume of every objective, x, y and `--z`."""
    names = (data.x, data.y, *data.z)
    ref = ", ".join(f"{v:g}" for v in data.reference_all)
    return (
        f"{len(names)}-d hypervolume",
        f"{data.hypervolume_all:.6g}: the volume of the ({', '.join(names)}) space that the "
        f"{'configs' if data.repeats else 'runs'} dominate, measured from the reference point "
        f"({ref}): 0 on a maximised axis, 1.1 × the largest value on a minimised one unless "
        f"--reference says otherwise. {data.nondominated_all} of {len(data.plotted)} are "
        "non-dominated in all of them (the pages draw the first two).",
    )


def _key_values(ax: Axes, rows: list[tuple[str, str]], size: float = 10.5) -> None:
    """Rows of `key  value` down the axes, values wrapped, spaced by their real line count."""
    line = size * 1.45  # points
    offset = 0.0
    for key, value in rows:
        text = wrap(value, 112)  # 125 ran past the page's edge on a line without spaces to spare
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


PAGE = Page("summary", TITLE, lambda data, table: [page_summary(data)])
