"""Page scaffolding shared by the pages: an A4 page with its title and caption, notes in place of
empty axes, the legend on the right, and the `Page` each page module declares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .data import ReportData
from .labels import wrap
from .style import PAGE_SIZE

__all__ = ["Page", "add_caption", "add_legend", "add_note", "header", "legend_handles", "new_page"]


@dataclass(frozen=True)
class Page:
    """A page of the report, as its module declares it: `name` (how `tradeoff.report.pdf` picks
    the front page for the PNG), `title`, and `draw`, which returns its figures (several for a
    long table; none when the runs lack what it shows, as the cost page without cost metrics).
    """

    name: str
    title: str
    draw: Callable[[ReportData, pd.DataFrame], list[Figure]]
    always: bool = True  # False: drawn only for runs that have what it shows


def new_page(title: str, caption: str | None = None) -> Figure:
    """An A4 landscape page with its title at the top and room for a caption at the bottom."""
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(rect=(0.01, 0.085, 0.98, 0.905), w_pad=0.08, h_pad=0.08)
    fig.suptitle(title, x=0.015, ha="left", fontweight="bold")
    if caption:
        add_caption(fig, caption)
    return fig


def add_caption(fig: Figure, text: str) -> None:
    """The page's explanation, in the band the layout leaves free at the bottom."""
    fig.text(0.015, 0.07, wrap(text, 165), fontsize=9, va="top", color="0.25")


def add_note(ax: Axes, text: str) -> None:
    """Replace an axes by a centred note saying why there is nothing to draw."""
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        wrap(text, 60),
        ha="center",
        va="center",
        fontsize=12,
        color="0.35",
        transform=ax.transAxes,
        bbox={"boxstyle": "round,pad=0.8", "fc": "0.96", "ec": "0.8"},
    )


def header(text: str) -> Line2D:
    """A legend entry with no symbol: a section heading, set bold by `add_legend`."""
    handle = Line2D([], [], ls="", marker="", label=text)
    handle._tradeoff_header = True  # type: ignore[attr-defined]
    return handle


def legend_handles(data: ReportData, extra: Sequence[Line2D] = ()) -> list[Line2D]:
    """Groups (colours: loss families or `--by`), experiments (markers, if several), then
    `extra` lines."""
    handles = [header(data.group_title)] + [
        Line2D([], [], ls="", marker="o", ms=8, color=data.colour(f), label=f)
        for f in data.groups()
    ]
    if len(data.experiments) > 1:
        handles += [header("experiment")] + [
            Line2D([], [], ls="", marker=data.marker(e), ms=8, mfc="0.6", mec="0.3", label=e)
            for e in data.experiments
        ]
    if extra:
        handles += [header("lines"), *extra]
    return handles


def add_legend(fig: Figure, handles: list[Line2D], title: str | None = None) -> None:
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
