"""The report's look: page size, fonts, and the colour and marker every run keeps on every page.

A loss family's colour is the one its description gives it (`tradeoff.losses.FAMILIES`); groups
of another param (`tradeoff-report --by model.layer`) take GROUP_COLOURS in order; the
experiment a run belongs to sets its marker.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb

from ..losses import FAMILIES

__all__ = [
    "EXPERIMENT_MARKERS",
    "FAMILY_COLOURS",
    "FRONT_COLOUR",
    "GROUP_COLOURS",
    "PAGE_SIZE",
    "RC",
    "RUN_LINESTYLES",
    "family_colour",
    "group_colour",
    "shades",
]

# One colour per loss family, on every page: the one its description gives it.
FAMILY_COLOURS: dict[str, str] = {name: f.colour for name, f in FAMILIES.items()}

_SPARE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")
# Groups of a param other than the loss family, in their sorted order: matplotlib's tab10.
GROUP_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
FRONT_COLOUR = "#222222"
EXPERIMENT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RUN_LINESTYLES = ("-", "--", "-.", ":")
PAGE_SIZE = (11.69, 8.27)  # A4 landscape, inches


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


def family_colour(family: str) -> str:
    """The colour of a loss family; families not in FAMILY_COLOURS get a stable spare colour."""
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    return _SPARE_COLOURS[sum(map(ord, family)) % len(_SPARE_COLOURS)]


def group_colour(index: int) -> str:
    """The colour of the `index`-th group of a param other than the loss family."""
    return GROUP_COLOURS[index % len(GROUP_COLOURS)]


def shades(colour: str, n: int) -> list[tuple[float, float, float]]:
    """`n` distinct shades of a group's colour, light to dark: one per run of the group where
    runs are drawn as separate lines, so that the hue still names the group."""
    base = np.array(to_rgb(colour))
    if n == 1:
        return [tuple(base)]
    # From 40% white to 45% black: every shade stays visible on white and apart from the next.
    out = []
    for t in np.linspace(-1.0, 1.0, n):
        target = np.ones(3) if t < 0 else np.zeros(3)
        weight = abs(t) * (0.4 if t < 0 else 0.45)
        out.append(tuple(base * (1 - weight) + target * weight))
    return out
