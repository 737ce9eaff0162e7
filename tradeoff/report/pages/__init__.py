"""The report's pages, in order: each module declares its `PAGE` (name, title, how to draw it).

A new page is a module here and one entry in `PAGES`; `tradeoff.report.pdf` picks the page it
also saves as a PNG by name (`HERO`), never by position.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ..data import ReportData
from ..layout import Page
from . import cost, cra, curves, front, hyper, radius, summary, table

__all__ = ["HERO", "PAGES", "PAGE_TITLES", "render", "render_pages"]

PAGES: tuple[Page, ...] = (
    summary.PAGE,
    front.PAGE,
    cra.PAGE,
    hyper.PAGE,
    radius.PAGE,
    curves.PAGE,
    table.PAGE,
    cost.PAGE,
)
PAGE_TITLES = tuple(page.title for page in PAGES if page.always)
"""The titles of the pages every report has, in order (the table may take several pages)."""
HERO = front.PAGE.name  # the page also written as <stem>_front.png


def render(data: ReportData, table: pd.DataFrame) -> dict[str, list[Figure]]:
    """Each page's figures by page name, in page order, every figure with a footer naming it;
    pages with nothing to show (no cost metrics) are left out."""
    drawn = {page.name: page.draw(data, table) for page in PAGES}
    drawn = {name: figures for name, figures in drawn.items() if figures}
    figures = [fig for page in drawn.values() for fig in page]
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
    return drawn


def render_pages(data: ReportData, table: pd.DataFrame) -> list[Figure]:
    """The report's figures in page order."""
    return [fig for figures in render(data, table).values() for fig in figures]
