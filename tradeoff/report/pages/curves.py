"""Page 6: the front runs' learning curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import ReportData, curve_runs
from ..draw import run_legend, run_legend_title, run_styles
from ..labels import metric_label
from ..layout import Page, add_legend, add_note, new_page

__all__ = ["PAGE", "TITLE", "page_curves"]

TITLE = "Learning curves"


def page_curves(data: ReportData) -> Figure:
    """Validation accuracy and certificate per epoch for the front runs (one panel per metric
    that some front run logged)."""
    runs, note = curve_runs(data)
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
    fig = new_page(TITLE, caption)
    if not logged:
        add_note(fig.add_subplot(), f"no {' or '.join(missing)} history logged by the front runs")
        return fig
    axes = np.atleast_1d(fig.subplots(1, len(logged)))
    styles = run_styles(data, runs)
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
    add_legend(fig, run_legend(data, runs, styles, lw=1.6, ms=5), title=run_legend_title(data))
    return fig


PAGE = Page("curves", TITLE, lambda data, table: [page_curves(data)])
