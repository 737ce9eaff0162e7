"""Page 5: CRA as a function of the radius for the front runs, from their per-sample
certificates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import ReportData, curve_runs
from ..draw import run_legend, run_legend_title, run_styles
from ..frame import cra_columns, radius_label
from ..layout import Page, add_legend, add_note, new_page

__all__ = ["PAGE", "TITLE", "page_radius"]

TITLE = "Certified robust accuracy vs radius"


def _reached(certificates: pd.DataFrame) -> np.ndarray:
    """Finite certificates of the correctly classified samples."""
    radius = certificates["certificate"].to_numpy(float)
    return radius[certificates["correct"].to_numpy(bool) & np.isfinite(radius)]


def page_radius(data: ReportData) -> Figure:
    """CRA as a function of the radius for the front runs, from the per-sample certificates."""
    runs, note = curve_runs(data)
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
    fig = new_page(TITLE, caption)
    ax = fig.add_subplot()
    if len(missing) == len(runs):
        add_note(
            ax,
            "no per-sample certificate artifact (certificates/test.parquet) for the "
            "runs on the front",
        )
        return fig
    grid = np.linspace(0.0, top, 400)
    styles = run_styles(data, runs)
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
    add_legend(fig, run_legend(data, shown, styles, lw=1.8, ms=6), title=run_legend_title(data))
    return fig


PAGE = Page("radius", TITLE, lambda data, table: [page_radius(data)])
