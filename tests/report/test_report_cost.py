"""Cost as a trade-off axis: cost metrics are minimised on fronts and in the hypervolume, the
front page says which way is better, and the cost page draws accuracy and CRA against cost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_frame import (
    _page_text,
    brute_front,
    brute_hypervolume,
    synthetic_data,
    synthetic_runs,
)

from tradeoff.report import PAGE_TITLES, hypervolume, load_runs, pareto_front
from tradeoff.report.data import ReportData
from tradeoff.report.frame import COST_METRICS, default_reference, maximised
from tradeoff.report.pages import render_pages
from tradeoff.report.pages.cost import TITLE as COST_PAGE_TITLE
from tradeoff.report.pages.cost import page_cost
from tradeoff.report.pages.front import page_front
from tradeoff.report.pages.summary import page_summary

COSTS = {"train/seconds": (2.0, 60.0), "train/peak_memory_mb": (300.0, 900.0)}


def _with_cost(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The synthetic runs with cost metrics; more accurate runs tend to cost more."""
    rng = np.random.default_rng(seed)
    runs = runs.copy()
    acc = runs["metrics.test/accuracy"].to_numpy()
    for metric, (low, high) in COSTS.items():
        runs[f"metrics.{metric}"] = low + (high - low) * np.clip(acc + rng.normal(0, 0.1), 0, 1)
    runs["metrics.model/params"] = rng.choice([1e3, 1e4, 1e5], len(runs))
    return runs


def _cost_data(x: str = "train/seconds") -> ReportData:
    runs = _with_cost(synthetic_runs())
    x_col, y_col = f"metrics.{x}", "metrics.test/accuracy"
    runs["on_front"] = pareto_front(runs, x_col, y_col)
    return ReportData(
        runs=runs,
        experiments=["synthetic"],
        x=x,
        y="test/accuracy",
        x_col=x_col,
        y_col=y_col,
        reference=default_reference(runs, x_col, y_col),
        hypervolume=hypervolume(runs, x_col, y_col, None),
    )


def test_cost_and_losses_are_minimised_the_rest_maximised():
    for metric in (*COST_METRICS, "train/epoch_seconds", "train/loss", "metrics.train/seconds"):
        assert not maximised(metric), metric
    for metric in ("test/accuracy", "test/mean_certificate", "test/cra_eps_0.5"):
        assert maximised(metric), metric
    assert maximised("train/images_per_second")  # a speed: more is better


@pytest.mark.parametrize("seed", range(8))
def test_a_cost_axis_is_minimised_on_the_front_and_in_the_hypervolume(seed):
    rng = np.random.default_rng(seed)
    points = np.round(rng.random((int(rng.integers(1, 40)), 2)), 1)  # (seconds, accuracy)
    df = pd.DataFrame({"metrics.train/seconds": points[:, 0], "metrics.acc": points[:, 1]})
    flipped = points * [-1, 1]  # minimising x is maximising -x
    got = pareto_front(df, "train/seconds", "acc").to_numpy()
    np.testing.assert_array_equal(got, brute_front(flipped))
    ref = default_reference(df, "train/seconds", "acc")
    assert ref == (pytest.approx(1.1 * points[:, 0].max() or 1.0), 0.0)
    assert hypervolume(df, "train/seconds", "acc", None) == pytest.approx(
        brute_hypervolume(flipped, (-ref[0], 0.0)), abs=1e-12
    )


def test_front_and_summary_pages_say_less_is_better():
    data = _cost_data()
    front = data.runs[data.runs["on_front"]]
    assert front["metrics.train/seconds"].min() == data.runs["metrics.train/seconds"].min()
    assert "less (better)" in page_front(data).axes[0].get_xlabel()
    text = _page_text(page_summary(data))
    assert "x = train/seconds (minimised)" in text and "Least train seconds (wall clock)" in text


def test_cost_page_draws_accuracy_and_cra_against_each_cost():
    data = _cost_data("test/mean_certificate")
    fig = page_cost(data)
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 2 * len(COST_METRICS)
    labels = {ax.get_xlabel() for ax in panels}
    assert labels == {
        "train seconds (wall clock)  ←  cheaper",
        "train peak memory (MiB)  ←  cheaper",
        "model parameters  ←  cheaper",
    }
    assert {ax.get_ylabel() for ax in panels if ax.get_ylabel()} == {
        "test accuracy",
        "test CRA at ε = 36/255",
    }
    assert [ax.get_xscale() for ax in panels[:3]] == ["linear", "linear", "log"]


def test_the_cost_page_comes_last_and_only_when_runs_logged_cost():
    plain = synthetic_data(synthetic_runs())
    assert len(render_pages(plain, pd.DataFrame())) == len(PAGE_TITLES)
    costly = _cost_data("test/mean_certificate")
    figures = render_pages(costly, pd.DataFrame())
    assert len(figures) == len(PAGE_TITLES) + 1
    assert COST_PAGE_TITLE in _page_text(figures[-1])


# -- through the CLI, on runs that logged their cost ----------------------------------------------


def _ok(args: list[str], cwd: Path) -> str:
    """Run a command in `cwd` against the store there; its stdout (it must succeed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils (pdftotext) missing")
def test_report_with_a_cost_axis_from_real_runs(tmp_path):
    digits = ["data=digits", "train.epochs=1", "model.filters=[4,8]", "train.batch_size=128"]
    store = ["tracking.experiment=cost", "train.threads=1", "tracking.log_model=false"]
    _ok(["tradeoff-train", "-m", *digits, *store, "loss.tau=3,30"], tmp_path)
    report = [sys.executable, "-m", "tradeoff.report.cli", "cost", "--x=train/seconds"]
    _ok([*report, "--no-attach"], tmp_path)
    pdf = tmp_path / "reports" / "cost.pdf"
    assert COST_PAGE_TITLE in _ok(["pdftotext", "-f", "8", "-l", "8", str(pdf), "-"], tmp_path)
    runs = load_runs("cost", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", x="train/seconds")
    cheapest = runs["metrics.train/seconds"].idxmin()
    assert runs.loc[cheapest, "on_front"]  # the cheapest run is never dominated
