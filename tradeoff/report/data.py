"""`ReportData`: everything the pages draw, gathered once by `tradeoff.report.pdf`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from .frame import ReportError, varying_params
from .style import EXPERIMENT_MARKERS, FAMILY_COLOURS, family_colour, group_colour

__all__ = ["GROUP", "MAX_CURVES", "ReportData", "curve_runs", "subset"]

MAX_CURVES = 10  # front runs drawn on the curve pages
GROUP = "group"  # the column of `runs` that colours the points: the loss family or `by`'s value


@dataclass
class ReportData:
    """Everything the pages draw: the runs, the chosen objectives and what was fetched."""

    # FINISHED job runs, seed repeats folded into one row (frame.seed_repeats: `seeds`), with
    # an `on_front` column
    runs: pd.DataFrame
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
    # Further objectives (`--z`): the hypervolume of all of them, its reference point (one
    # value per objective: x, y, *z) and how many rows no other dominates in all of them.
    z: tuple[str, ...] = ()
    z_cols: tuple[str, ...] = ()
    reference_all: tuple[float, ...] = ()
    hypervolume_all: float = float("nan")
    nondominated_all: int = 0
    # The param whose values colour the runs and get a front each (`--by model.layer`); None:
    # the loss family.
    by: str | None = None

    def __post_init__(self) -> None:
        self.runs = self.runs.assign(**{GROUP: _groups(self.runs, self.by)})

    @property
    def repeats(self) -> bool:
        """Whether some config was run with several seeds (its row holds their means)."""
        return "seeds" in self.runs and bool((self.runs["seeds"] > 1).any())

    @property
    def run_count(self) -> int:
        """FINISHED job runs drawn, each seed repeat counted."""
        return int(self.runs["seeds"].sum()) if "seeds" in self.runs else len(self.runs)

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

    @property
    def group_title(self) -> str:
        """What the groups are, as legends title them: "loss family", or the `by` param."""
        return self.by or "loss family"

    def groups(self) -> list[str]:
        """The values of the GROUP column present: the loss families (`families`), or the `by`
        param's values in sorted order."""
        if self.by is None:
            return self.families()
        return sorted(set(self.runs[GROUP].astype(str)))

    def colour(self, group: str) -> str:
        """A group's colour on every page: its loss family's, or its place among `groups()`."""
        if self.by is None:
            return family_colour(group)
        return group_colour(self.groups().index(group))


def _groups(runs: pd.DataFrame, by: str | None) -> pd.Series:
    """Each run's group: its loss family, or its value of the param `by` ("None" if unset)."""
    if by is None:
        return runs.get("loss_family", pd.Series("", index=runs.index)).astype(str)
    column = f"params.{by}"
    if column not in runs:
        logged = sorted(c.removeprefix("params.") for c in runs if c.startswith("params."))
        near = [p for p in logged if p.split(".")[0] == by.split(".")[0]] or logged[:8]
        raise ReportError(
            f"--by {by}: no run logged that param; choose one they logged, e.g. " + ", ".join(near)
        )
    return runs[column].astype(str).where(runs[column].notna(), "None")


def curve_runs(data: ReportData) -> tuple[pd.DataFrame, str]:
    front = data.front
    keep = subset(len(front), MAX_CURVES)
    note = ""
    if len(keep) < len(front):
        note = f" Showing {len(keep)} of the {len(front)} front runs, spread along the front."
    return front.iloc[keep], note


def subset(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), the first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
