"""Page 7 on: the front as a table, `TABLE_ROWS` rows a page."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from ..data import ReportData
from ..frame import radius_label, spread_column
from ..labels import metric_label, number, wrap_words
from ..layout import Page, add_note, new_page
from ..style import family_colour

__all__ = ["PAGE", "TABLE_ROWS", "TITLE", "table_pages"]

TITLE = "Pareto front table"

TABLE_ROWS = 20  # front runs per table page


def table_pages(data: ReportData, table: pd.DataFrame) -> list[Figure]:
    """The front table (`frame.front_table`), TABLE_ROWS rows a page."""
    cra = [c for c in table.columns if "/cra_eps_" in c and not c.startswith("std.")]
    show_exp = len(data.experiments) > 1
    seeds = "seeds" in table
    header = (
        ["run id"]
        + (["experiment"] if show_exp else [])
        + ["loss", "hyperparameters"]
        + (["seeds"] if seeds else [])
        + [metric_label(data.y), metric_label(data.x)]
        + [f"CRA {radius_label(float(c.rsplit('_', 1)[1]))}" for c in cra]
    )

    def value(row: pd.Series, column: str) -> str:
        """The mean, and ± its standard deviation over the seeds when there are several."""
        spread = row.get(spread_column(column), np.nan)
        if seeds and row["seeds"] > 1 and np.isfinite(spread):
            return f"{number(row[column])} ± {number(spread)}"
        return number(row[column])

    rows = []
    for _, r in table.iterrows():
        rows.append(
            [r["run_id"]]
            + ([r["experiment"]] if show_exp else [])
            + [r["loss_family"], r["hyperparameters"] or "—"]
            + ([str(int(r["seeds"]))] if seeds else [])
            + [value(r, data.y), value(r, data.x)]
            + [value(r, c) for c in cra]
        )
    pages = []
    chunks = [rows[i : i + TABLE_ROWS] for i in range(0, len(rows), TABLE_ROWS)] or [[]]
    for n, chunk in enumerate(chunks):
        title = TITLE + (f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else "")
        caption = (
            f"The {len(table)} {'configs' if seeds else 'runs'} on the overall front, most "
            "accurate first. Objectives: "
            f"{data.y} and {data.x}; CRA = test certified robust accuracy at radius ε. "
            "Certificates and ε are L2 radii in the input's pixel scale. "
            f"The same table is beside the PDF as {data.table_name}."
        )
        if seeds:
            caption += (
                " A config run with several seeds is one row: its first seed's run id, the "
                "means over its seeds ± one standard deviation."
            )
        fig = new_page(title, caption)
        ax = fig.add_subplot()
        ax.set_axis_off()
        _draw_table(ax, header, chunk, families=[row[2 if show_exp else 1] for row in chunk])
        pages.append(fig)
    return pages


def _draw_table(ax: Axes, header: list[str], rows: list[list[str]], families: list[str]) -> None:
    """A plain table filling the axes' width: columns as wide as their widest text."""
    if not rows:
        add_note(ax, "no runs on the front")
        return
    fig = ax.get_figure()
    fig.canvas.draw()  # settle the layout so the axes' width is known
    renderer = fig.canvas.get_renderer()
    axes_px = ax.get_window_extent(renderer).width
    header = [wrap_words(h, 14) for h in header]

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


PAGE = Page("table", TITLE, table_pages)
