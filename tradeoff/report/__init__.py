"""Pareto report of MLflow experiments: runs as a DataFrame, their front, its hypervolume, a PDF.

from tradeoff.report import load_runs, pareto_front, hypervolume, build_report
runs = load_runs("tau_grid")                      # one row per FINISHED job run
runs[runs.on_front]                                # the accuracy–certificate front
seed_repeats(runs)                                 # one row per config: means over its seeds
build_report("tau_grid")                           # reports/tau_grid.pdf
"""

from .frame import (
    DEFAULT_X,
    DEFAULT_Y,
    REFERENCE,
    ReportError,
    front_table,
    hypervolume,
    load_runs,
    nondominated,
    pareto_front,
    seed_repeats,
)
from .pages import PAGE_TITLES
from .pdf import build_report
from .style import FAMILY_COLOURS
from .summary import summary_metrics, sweep_summary

__all__ = [
    "DEFAULT_X",
    "DEFAULT_Y",
    "FAMILY_COLOURS",
    "PAGE_TITLES",
    "REFERENCE",
    "ReportError",
    "build_report",
    "front_table",
    "hypervolume",
    "load_runs",
    "nondominated",
    "pareto_front",
    "seed_repeats",
    "summary_metrics",
    "sweep_summary",
]
